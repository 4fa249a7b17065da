//! The literal prefilter: says "no failregex can match this line" cheaply.
//!
//! Owns the extraction of required literals from each failregex (every
//! match must contain at least one literal of its set) and one Aho-Corasick
//! automaton over all of them. A line that contains none of a regex's
//! literals is never given to that regex. False positives are allowed,
//! false negatives never: a regex whose requirements cannot be stated
//! (case-insensitive parts, classes only) is always a candidate.

use aho_corasick::{AhoCorasick, MatchKind};
use regex_syntax::hir::literal::{ExtractKind, Extractor};
use regex_syntax::hir::{Hir, HirKind, Look};

/// A piece of a concatenation: adjacent literals joined, or another item.
enum Part<'h> {
    Run(Vec<u8>),
    Item(&'h Hir),
}

fn concat_parts(subs: &[Hir]) -> Vec<Part<'_>> {
    let mut parts = Vec::new();
    let mut run: Vec<u8> = Vec::new();
    for s in subs {
        match s.kind() {
            HirKind::Literal(lit) => run.extend_from_slice(&lit.0),
            // zero-width: the literals around it are still adjacent
            HirKind::Look(_) => {}
            _ => {
                if !run.is_empty() {
                    parts.push(Part::Run(std::mem::take(&mut run)));
                }
                parts.push(Part::Item(s));
            }
        }
    }
    if !run.is_empty() {
        parts.push(Part::Run(run));
    }
    parts
}

/// Literals of which every match contains at least one; `None` if nothing
/// useful can be said.
fn required(h: &Hir) -> Option<Vec<Vec<u8>>> {
    match h.kind() {
        HirKind::Literal(lit) => Some(vec![lit.0.to_vec()]),
        HirKind::Capture(c) => required(&c.sub),
        HirKind::Repetition(r) if r.min >= 1 => required(&r.sub),
        HirKind::Alternation(subs) => {
            let mut all = Vec::new();
            for s in subs {
                all.extend(required(s)?);
            }
            Some(all)
        }
        HirKind::Concat(subs) => {
            // adjacent literals form longer ones; then keep the best set
            let candidates: Vec<Vec<Vec<u8>>> = concat_parts(subs)
                .into_iter()
                .filter_map(|part| match part {
                    Part::Run(run) => Some(vec![run]),
                    Part::Item(item) => required(item),
                })
                .collect();
            candidates.into_iter().max_by_key(|set| score(set))
        }
        _ => None,
    }
}

/// All literal requirements of a pattern: every match contains a literal
/// of each returned set (a conjunction of disjunctions).
pub fn all_requirements(pattern: &str) -> Vec<Vec<Vec<u8>>> {
    fn walk(h: &Hir, out: &mut Vec<Vec<Vec<u8>>>) {
        match h.kind() {
            HirKind::Literal(lit) => out.push(vec![lit.0.to_vec()]),
            HirKind::Capture(c) => walk(&c.sub, out),
            HirKind::Repetition(r) if r.min >= 1 => walk(&r.sub, out),
            HirKind::Concat(subs) => {
                for part in concat_parts(subs) {
                    match part {
                        Part::Run(run) => out.push(vec![run]),
                        Part::Item(item) => walk(item, out),
                    }
                }
            }
            HirKind::Alternation(_) => {
                if let Some(set) = required(h) {
                    out.push(set);
                }
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    if let Ok(h) = regex_syntax::Parser::new().parse(pattern) {
        walk(&h, &mut out);
    }
    out.retain(|set| !set.is_empty() && set.iter().all(|l| !l.is_empty()));
    out
}

/// Required literals of a `regex`-crate pattern (every match contains one),
/// if any can be stated.
pub fn required_literals(pattern: &str) -> Option<Vec<Vec<u8>>> {
    let h = regex_syntax::Parser::new().parse(pattern).ok()?;
    required(&h).filter(|set| !set.is_empty() && set.iter().all(|l| !l.is_empty()))
}

/// Prefer sets whose shortest literal is long, then smaller sets.
fn score(set: &[Vec<u8>]) -> (usize, std::cmp::Reverse<usize>) {
    let shortest = set.iter().map(Vec::len).min().unwrap_or(0);
    (shortest.min(8), std::cmp::Reverse(set.len()))
}

/// For a regex anchored at the start of the text: the literals one of
/// which every match starts with.
fn anchored_prefixes(h: &Hir) -> Option<Vec<Vec<u8>>> {
    if !h.properties().look_set_prefix().contains(Look::Start) {
        return None;
    }
    let seq = Extractor::new().kind(ExtractKind::Prefix).extract(h);
    let lits = seq.literals()?;
    let set: Vec<Vec<u8>> = lits.iter().map(|l| l.as_bytes().to_vec()).collect();
    (!set.is_empty() && set.iter().all(|l| !l.is_empty())).then_some(set)
}

/// Candidate selection for a list of regexes: a regex anchored at the start
/// is a candidate if the text starts with one of its prefixes; another one
/// if the text contains one of its required literals (one Aho-Corasick pass
/// for all of them).
#[derive(Debug)]
pub struct Prefilter {
    /// Prefixes of start-anchored regexes by their first byte:
    /// (regex index, prefix) pairs.
    anchored: Vec<Vec<(usize, Vec<u8>)>>,
    ac: Option<AhoCorasick>,
    /// Literal index -> regex indices that require it.
    owners: Vec<Vec<usize>>,
    /// Regexes without a usable requirement: always candidates.
    always: Vec<usize>,
}

impl Prefilter {
    /// Builds the prefilter from `regex`-crate patterns (exact or
    /// over-approximations). `None` when no regex has a requirement.
    pub fn new(patterns: &[&str]) -> Option<Prefilter> {
        let mut lits: Vec<Vec<u8>> = Vec::new();
        let mut owners: Vec<Vec<usize>> = Vec::new();
        let mut always = Vec::new();
        let mut anchored: Vec<Vec<(usize, Vec<u8>)>> = vec![Vec::new(); 256];
        let mut any_anchored = false;
        for (i, p) in patterns.iter().enumerate() {
            let hir = regex_syntax::Parser::new().parse(p).ok();
            if let Some(prefixes) = hir.as_ref().and_then(anchored_prefixes) {
                for p in prefixes {
                    anchored[usize::from(p[0])].push((i, p));
                }
                any_anchored = true;
                continue;
            }
            let req = hir
                .as_ref()
                .and_then(required)
                .filter(|set| set.iter().all(|l| !l.is_empty()));
            match req {
                None => always.push(i),
                Some(set) => {
                    for l in set {
                        match lits.iter().position(|x| *x == l) {
                            Some(k) => owners[k].push(i),
                            None => {
                                lits.push(l);
                                owners.push(vec![i]);
                            }
                        }
                    }
                }
            }
        }
        if lits.is_empty() && !any_anchored {
            return None;
        }
        let ac = if lits.is_empty() {
            None
        } else {
            Some(
                AhoCorasick::builder()
                    .match_kind(MatchKind::Standard)
                    .build(&lits)
                    .ok()?,
            )
        };
        Some(Prefilter {
            anchored,
            ac,
            owners,
            always,
        })
    }

    /// Puts in `out` the indices of the regexes that may match `hay`, in
    /// ascending order. Returns whether any may.
    pub fn candidates(&self, hay: &str, out: &mut Vec<usize>) -> bool {
        out.clear();
        out.extend_from_slice(&self.always);
        let bytes = hay.as_bytes();
        if let Some(&first) = bytes.first() {
            out.extend(
                self.anchored[usize::from(first)]
                    .iter()
                    .filter(|(_, p)| bytes.starts_with(p))
                    .map(|(i, _)| *i),
            );
        }
        if let Some(ac) = &self.ac {
            for m in ac.find_overlapping_iter(hay) {
                out.extend_from_slice(&self.owners[m.pattern().as_usize()]);
            }
        }
        if out.len() > 1 {
            out.sort_unstable();
            out.dedup();
        }
        !out.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requirements_never_reject_a_matching_line() {
        let pats = [
            r"^Failed \S+ for (?P<u>.*) from (?P<h>\d+)$",
            r"^(?:Invalid|Illegal) user \S+",
            r"\d+",
        ];
        let pf = Prefilter::new(&pats).unwrap();
        let mut out = Vec::new();
        assert!(pf.candidates("Failed password for x from 1", &mut out));
        assert_eq!(out, [0, 2]);
        pf.candidates("Illegal user bob", &mut out);
        assert_eq!(out, [1, 2]);
        let only = Prefilter::new(&[r"^Accepted (?P<x>\w+)"]).unwrap();
        assert!(!only.candidates("session opened", &mut out));
        assert!(
            !only.candidates("x Accepted y", &mut out),
            "anchored: the prefix must start the text"
        );
        assert!(only.candidates("Accepted y", &mut out));
        let ci = Prefilter::new(&[r"^[aA]uthentication (?:failure|error)"]).unwrap();
        assert!(ci.candidates("authentication error", &mut out));
        assert!(!ci.candidates("Authorization", &mut out));
        assert!(Prefilter::new(&[r"(?i)abc"]).is_none());
    }

    /// Candidates come in the failregexes' order, each once, whichever
    /// part of the prefilter let them through (Fail2Ban tries failregexes
    /// in order and the first match wins).
    #[test]
    fn candidates_come_in_order_and_once() {
        let pats = [
            r"from (?P<h>\S+)",
            r"^Failed (?:password|publickey)",
            r"(?i)x",
            r"^Failed",
            r"(?:from|port) \d+",
        ];
        let pf = Prefilter::new(&pats).unwrap();
        let mut out = Vec::new();
        assert!(pf.candidates("Failed password from 10.0.0.1 port 22", &mut out));
        assert_eq!(out, [0, 1, 2, 3, 4]);
        assert!(pf.candidates("Failed none", &mut out));
        assert_eq!(out, [2, 3]);
    }
}
