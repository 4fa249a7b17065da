//! The literal prefilter: says "no failregex can match this line" cheaply.
//!
//! Owns the extraction of required literals from each failregex (every
//! match must contain at least one literal of its set) and one Aho-Corasick
//! automaton over all of them. A line that contains none of a regex's
//! literals is never given to that regex. False positives are allowed,
//! false negatives never: a regex whose requirements cannot be stated
//! (case-insensitive parts, classes only) is always a candidate.

use aho_corasick::{AhoCorasick, MatchKind};
use regex_syntax::hir::{Hir, HirKind};

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
            let mut candidates: Vec<Vec<Vec<u8>>> = Vec::new();
            let mut run: Vec<u8> = Vec::new();
            for s in subs {
                match s.kind() {
                    HirKind::Literal(lit) => run.extend_from_slice(&lit.0),
                    HirKind::Look(_) => {}
                    _ => {
                        if !run.is_empty() {
                            candidates.push(vec![std::mem::take(&mut run)]);
                        }
                        if let Some(r) = required(s) {
                            candidates.push(r);
                        }
                    }
                }
            }
            if !run.is_empty() {
                candidates.push(vec![run]);
            }
            candidates.into_iter().max_by_key(|set| score(set))
        }
        _ => None,
    }
}

/// Prefer sets whose shortest literal is long, then smaller sets.
fn score(set: &[Vec<u8>]) -> (usize, std::cmp::Reverse<usize>) {
    let shortest = set.iter().map(Vec::len).min().unwrap_or(0);
    (shortest.min(8), std::cmp::Reverse(set.len()))
}

/// Candidate selection for a list of regexes.
#[derive(Debug)]
pub struct Prefilter {
    ac: AhoCorasick,
    /// Literal index -> regex indices that require it.
    owners: Vec<Vec<usize>>,
    /// Regexes without a usable requirement: always candidates.
    always: Vec<usize>,
    regexes: usize,
}

impl Prefilter {
    /// Builds the prefilter from `regex`-crate patterns (exact or
    /// over-approximations). `None` when no regex has a requirement.
    pub fn new(patterns: &[&str]) -> Option<Prefilter> {
        let mut lits: Vec<Vec<u8>> = Vec::new();
        let mut owners: Vec<Vec<usize>> = Vec::new();
        let mut always = Vec::new();
        for (i, p) in patterns.iter().enumerate() {
            let req = regex_syntax::Parser::new()
                .parse(p)
                .ok()
                .and_then(|h| required(&h))
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
        if lits.is_empty() {
            return None;
        }
        let ac = AhoCorasick::builder().match_kind(MatchKind::Standard).build(&lits).ok()?;
        Some(Prefilter {
            ac,
            owners,
            always,
            regexes: patterns.len(),
        })
    }

    /// Marks in `out` (one flag per regex) which regexes may match `hay`.
    /// Returns whether any may.
    pub fn candidates(&self, hay: &str, out: &mut Vec<bool>) -> bool {
        out.clear();
        out.resize(self.regexes, false);
        let mut any = false;
        for &i in &self.always {
            out[i] = true;
            any = true;
        }
        for m in self.ac.find_overlapping_iter(hay) {
            for &i in &self.owners[m.pattern().as_usize()] {
                out[i] = true;
                any = true;
            }
        }
        any
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requirements_never_reject_a_matching_line() {
        let pats = [r"^Failed \S+ for (?P<u>.*) from (?P<h>\d+)$", r"^(?:Invalid|Illegal) user \S+", r"\d+"];
        let pf = Prefilter::new(&pats).unwrap();
        let mut out = Vec::new();
        assert!(pf.candidates("Failed password for x from 1", &mut out));
        assert_eq!(out, [true, false, true]);
        pf.candidates("Illegal user bob", &mut out);
        assert_eq!(out, [false, true, true]);
        let only = Prefilter::new(&[r"^Accepted (?P<x>\w+)"]).unwrap();
        assert!(!only.candidates("session opened", &mut out));
        assert!(Prefilter::new(&[r"(?i)abc"]).is_none());
    }
}
