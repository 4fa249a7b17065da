//! Python `re` patterns on Rust engines.
//!
//! Owns the translation of a Python regular expression (as Fail2Ban filters
//! write them) into the `regex` crate's syntax, and the choice of engine:
//! the linear-time `regex` crate whenever the pattern allows it, otherwise
//! `fancy-regex` (look-around, back-references, conditionals, atomic groups)
//! behind a `regex`-crate over-approximation that rejects most haystacks
//! first. Group numbers and names are kept exactly as Python numbers them.
//!
//! Semantics kept from Python: `$` without `re.M` matches at the end or
//! before a final `\n` (haystacks are given with their trailing `\n`, as
//! Fail2Ban gives them, and contain no other `\n` unless multi-line), `\Z`
//! is the absolute end, `{` that does not start a valid repetition is a
//! literal, `\<` is a plain `<`, inline global flags apply to the whole
//! pattern.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::OnceLock;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    #[error("{msg} (at character {pos} after expanding tags)")]
    Syntax {
        pattern: String,
        pos: usize,
        msg: String,
    },
    #[error("{msg}")]
    Compile { pattern: String, msg: String },
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Flags {
    i: bool,
    m: bool,
    s: bool,
    x: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Perl {
    Digit,
    Word,
    Space,
}

#[derive(Debug, Clone)]
enum ClassItem {
    Char(char),
    Range(char, char),
    Perl(Perl, bool),
}

#[derive(Debug, Clone)]
enum GroupKind {
    Capture(usize),
    NonCapture,
    Look { behind: bool, negate: bool },
    Atomic,
}

type Concat = Vec<Node>;
type Alt = Vec<Concat>;

#[derive(Debug, Clone)]
enum Node {
    Char(char),
    Any,
    Class {
        negated: bool,
        items: Vec<ClassItem>,
    },
    Perl(Perl, bool),
    LineStart,
    LineEnd,
    TextStart,
    TextEnd,
    WordBoundary(bool),
    /// `(?=^|\b|\W)` / `(?=\b|\W|$)`: "not between two word characters".
    NotInsideWord,
    Group {
        kind: GroupKind,
        flags_on: Flags,
        flags_off: Flags,
        body: Alt,
    },
    Cond {
        group: usize,
        yes: Concat,
        no: Concat,
    },
    Backref(usize),
    /// Alternatives made by conditional elimination (see [`eliminate`]):
    /// a non-capturing alternation whose branches can be pruned.
    Split {
        id: usize,
        branches: Alt,
    },
    Repeat {
        node: Box<Node>,
        min: u32,
        max: Option<u32>,
        greedy: bool,
        possessive: bool,
    },
}

/// A parsed Python pattern.
#[derive(Debug, Clone)]
pub struct PyPattern {
    root: Alt,
    flags: Flags,
    /// Group names by Python group number; index 0 is the whole match.
    pub names: Vec<Option<String>>,
    /// Capturing group bodies by number (for back-reference approximation).
    bodies: Vec<Alt>,
}

struct Parser<'a> {
    src: &'a str,
    chars: Vec<char>,
    pos: usize,
    flags: Flags,
    names: Vec<Option<String>>,
    bodies: Vec<Alt>,
    open: Vec<usize>,
}

const MAX_REPEAT: u32 = 65_535;

impl<'a> Parser<'a> {
    fn err<T>(&self, msg: impl Into<String>) -> Result<T, PatternError> {
        Err(PatternError::Syntax {
            pattern: self.src.to_string(),
            pos: self.pos,
            msg: msg.into(),
        })
    }
    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }
    fn peek_at(&self, off: usize) -> Option<char> {
        self.chars.get(self.pos + off).copied()
    }
    fn eat(&mut self, c: char) -> bool {
        if self.peek() == Some(c) {
            self.pos += 1;
            true
        } else {
            false
        }
    }
    fn starts_with(&self, s: &str) -> bool {
        s.chars()
            .enumerate()
            .all(|(k, c)| self.chars.get(self.pos + k) == Some(&c))
    }

    fn parse_alt(&mut self) -> Result<Alt, PatternError> {
        let mut alt = vec![self.parse_concat()?];
        while self.eat('|') {
            alt.push(self.parse_concat()?);
        }
        Ok(alt)
    }

    fn skip_verbose(&mut self) {
        if !self.flags.x {
            return;
        }
        loop {
            match self.peek() {
                Some(c) if c.is_whitespace() => self.pos += 1,
                Some('#') => {
                    while let Some(c) = self.peek() {
                        self.pos += 1;
                        if c == '\n' {
                            break;
                        }
                    }
                }
                _ => return,
            }
        }
    }

    fn parse_concat(&mut self) -> Result<Concat, PatternError> {
        let mut seq: Concat = Vec::new();
        loop {
            self.skip_verbose();
            let Some(c) = self.peek() else { break };
            if c == '|' || c == ')' {
                break;
            }
            if matches!(c, '*' | '+' | '?') || (c == '{' && self.repeat_ahead().is_some()) {
                let here = self.pos;
                let (min, max) = match c {
                    '*' => {
                        self.pos += 1;
                        (0, None)
                    }
                    '+' => {
                        self.pos += 1;
                        (1, None)
                    }
                    '?' => {
                        self.pos += 1;
                        (0, Some(1))
                    }
                    _ => {
                        let (min, max, len) = self.repeat_ahead().unwrap_or((0, None, 1));
                        self.pos += len;
                        (min, max)
                    }
                };
                if let Some(mx) = max {
                    if mx < min {
                        self.pos = here;
                        return self.err("min repeat greater than max repeat");
                    }
                }
                let Some(last) = seq.pop() else {
                    self.pos = here;
                    return self.err("nothing to repeat");
                };
                if matches!(
                    last,
                    Node::LineStart
                        | Node::LineEnd
                        | Node::TextStart
                        | Node::TextEnd
                        | Node::WordBoundary(_)
                        | Node::NotInsideWord
                ) {
                    self.pos = here;
                    return self.err("nothing to repeat");
                }
                if matches!(last, Node::Repeat { .. }) {
                    self.pos = here;
                    return self.err("multiple repeat");
                }
                let (greedy, possessive) = if self.eat('?') {
                    (false, false)
                } else if self.eat('+') {
                    (true, true)
                } else {
                    (true, false)
                };
                seq.push(Node::Repeat {
                    node: Box::new(last),
                    min,
                    max,
                    greedy,
                    possessive,
                });
                continue;
            }
            if let Some(node) = self.parse_atom()? {
                seq.push(node);
            }
        }
        Ok(seq)
    }

    /// `{m}`, `{m,}`, `{,n}`, `{m,n}` at the cursor: (min, max, length).
    fn repeat_ahead(&self) -> Option<(u32, Option<u32>, usize)> {
        if self.peek() != Some('{') || self.peek_at(1) == Some('}') {
            return None;
        }
        let mut i = self.pos + 1;
        let digits = |i: &mut usize| {
            let s = *i;
            while self.chars.get(*i).is_some_and(|c| c.is_ascii_digit()) {
                *i += 1;
            }
            self.chars[s..*i].iter().collect::<String>()
        };
        let lo = digits(&mut i);
        let hi = if self.chars.get(i) == Some(&',') {
            i += 1;
            Some(digits(&mut i))
        } else {
            None
        };
        if self.chars.get(i) != Some(&'}') {
            return None;
        }
        let min = if lo.is_empty() {
            0
        } else {
            lo.parse::<u32>().ok()?.min(MAX_REPEAT)
        };
        let max = match hi {
            None => Some(min),
            Some(h) if h.is_empty() => None,
            Some(h) => Some(h.parse::<u32>().ok()?.min(MAX_REPEAT)),
        };
        Some((min, max, i + 1 - self.pos))
    }

    fn parse_atom(&mut self) -> Result<Option<Node>, PatternError> {
        let c = self.chars[self.pos];
        self.pos += 1;
        Ok(Some(match c {
            '.' => Node::Any,
            '^' => Node::LineStart,
            '$' => Node::LineEnd,
            '[' => self.parse_class()?,
            '(' => return self.parse_group(),
            '\\' => self.parse_escape()?,
            c => Node::Char(c),
        }))
    }

    fn parse_name(&mut self, end: char) -> Result<String, PatternError> {
        let start = self.pos;
        while let Some(c) = self.peek() {
            if c == end {
                let name: String = self.chars[start..self.pos].iter().collect();
                self.pos += 1;
                let valid = name
                    .chars()
                    .next()
                    .is_some_and(|c| c.is_alphabetic() || c == '_')
                    && name.chars().all(|c| c.is_alphanumeric() || c == '_');
                if !valid {
                    return self.err(format!("bad character in group name {name:?}"));
                }
                return Ok(name);
            }
            self.pos += 1;
        }
        self.err("missing group name terminator")
    }

    fn group_by_name(&self, name: &str) -> Option<usize> {
        self.names.iter().position(|n| n.as_deref() == Some(name))
    }

    fn parse_flags(&mut self) -> Result<(Flags, Flags, bool), PatternError> {
        // after "(?": letters [-letters] then ':' (scoped) or ')' (global)
        let mut on = Flags::default();
        let mut off = Flags::default();
        let mut negative = false;
        loop {
            let Some(c) = self.peek() else {
                return self.err("missing ), unterminated flags");
            };
            self.pos += 1;
            let target = if negative { &mut off } else { &mut on };
            match c {
                'i' => target.i = true,
                'm' => target.m = true,
                's' => target.s = true,
                'x' => target.x = true,
                'a' | 'u' | 'L' => {}
                '-' if !negative => negative = true,
                ':' => return Ok((on, off, true)),
                ')' if !negative => return Ok((on, off, false)),
                _ => return self.err(format!("unknown flag {c:?}")),
            }
        }
    }

    fn parse_group(&mut self) -> Result<Option<Node>, PatternError> {
        let group_start = self.pos - 1;
        if !self.eat('?') {
            return self.capture_group(None).map(Some);
        }
        if self.eat(':') {
            let body = self.parse_body()?;
            return Ok(Some(Node::Group {
                kind: GroupKind::NonCapture,
                flags_on: Flags::default(),
                flags_off: Flags::default(),
                body,
            }));
        }
        if self.starts_with("P<") {
            self.pos += 2;
            let name = self.parse_name('>')?;
            return self.capture_group(Some(name)).map(Some);
        }
        if self.starts_with("P=") {
            self.pos += 2;
            let name = self.parse_name(')')?;
            let Some(idx) = self.group_by_name(&name) else {
                return self.err(format!("unknown group name {name:?}"));
            };
            if self.open.contains(&idx) {
                return self.err("cannot refer to an open group");
            }
            return Ok(Some(Node::Backref(idx)));
        }
        if self.eat('#') {
            while let Some(c) = self.peek() {
                self.pos += 1;
                if c == ')' {
                    return Ok(None);
                }
            }
            return self.err("missing ), unterminated comment");
        }
        let look = if self.eat('=') {
            Some((false, false))
        } else if self.eat('!') {
            Some((false, true))
        } else if self.starts_with("<=") {
            self.pos += 2;
            Some((true, false))
        } else if self.starts_with("<!") {
            self.pos += 2;
            Some((true, true))
        } else {
            None
        };
        if let Some((behind, negate)) = look {
            let body = self.parse_body()?;
            let text: String = self.chars[group_start..self.pos].iter().collect();
            if !behind && !negate && (text == r"(?=^|\b|\W)" || text == r"(?=\b|\W|$)") {
                return Ok(Some(Node::NotInsideWord));
            }
            return Ok(Some(Node::Group {
                kind: GroupKind::Look { behind, negate },
                flags_on: Flags::default(),
                flags_off: Flags::default(),
                body,
            }));
        }
        if self.eat('>') {
            let body = self.parse_body()?;
            return Ok(Some(Node::Group {
                kind: GroupKind::Atomic,
                flags_on: Flags::default(),
                flags_off: Flags::default(),
                body,
            }));
        }
        if self.eat('(') {
            let start = self.pos;
            while self.peek().is_some_and(|c| c != ')') {
                self.pos += 1;
            }
            let name: String = self.chars[start..self.pos].iter().collect();
            if !self.eat(')') {
                return self.err("missing ), unterminated name");
            }
            let group = match name.parse::<usize>() {
                Ok(n) if n > 0 && n < self.names.len() => n,
                Ok(_) => return self.err(format!("invalid group reference {name}")),
                Err(_) => match self.group_by_name(&name) {
                    Some(n) => n,
                    None => return self.err(format!("unknown group name {name:?}")),
                },
            };
            let mut alt = self.parse_alt()?;
            if !self.eat(')') {
                return self.err("missing ), unterminated subpattern");
            }
            if alt.len() > 2 {
                return self.err("conditional backref with more than two branches");
            }
            let no = if alt.len() == 2 {
                alt.pop().unwrap_or_default()
            } else {
                Vec::new()
            };
            let yes = alt.pop().unwrap_or_default();
            return Ok(Some(Node::Cond { group, yes, no }));
        }
        if self.peek() == Some('<') {
            // `(?<name>...)`: not Python, but common elsewhere; accept it
            self.pos += 1;
            let name = self.parse_name('>')?;
            return self.capture_group(Some(name)).map(Some);
        }
        let (on, off, scoped) = self.parse_flags()?;
        if scoped {
            let saved = self.flags;
            if on.x {
                self.flags.x = true;
            }
            if off.x {
                self.flags.x = false;
            }
            let body = self.parse_body()?;
            self.flags = saved;
            return Ok(Some(Node::Group {
                kind: GroupKind::NonCapture,
                flags_on: on,
                flags_off: off,
                body,
            }));
        }
        // global flags: apply to the whole pattern (Python <= 3.10 semantics)
        self.flags.i |= on.i;
        self.flags.m |= on.m;
        self.flags.s |= on.s;
        self.flags.x |= on.x;
        Ok(None)
    }

    fn parse_body(&mut self) -> Result<Alt, PatternError> {
        let body = self.parse_alt()?;
        if !self.eat(')') {
            return self.err("missing ), unterminated subpattern");
        }
        Ok(body)
    }

    fn capture_group(&mut self, name: Option<String>) -> Result<Node, PatternError> {
        if let Some(n) = &name {
            if self.group_by_name(n).is_some() {
                return self.err(format!("redefinition of group name {n:?}"));
            }
        }
        let idx = self.names.len();
        self.names.push(name);
        self.bodies.push(Vec::new());
        self.open.push(idx);
        let body = self.parse_body()?;
        self.open.retain(|&g| g != idx);
        self.bodies[idx] = body.clone();
        Ok(Node::Group {
            kind: GroupKind::Capture(idx),
            flags_on: Flags::default(),
            flags_off: Flags::default(),
            body,
        })
    }

    fn hex(&mut self, n: usize) -> Result<char, PatternError> {
        let s: String = self.chars[self.pos..(self.pos + n).min(self.chars.len())]
            .iter()
            .collect();
        if s.len() != n || !s.chars().all(|c| c.is_ascii_hexdigit()) {
            return self.err("incomplete escape");
        }
        self.pos += n;
        u32::from_str_radix(&s, 16)
            .ok()
            .and_then(char::from_u32)
            .map_or_else(|| self.err("bad escape value"), Ok)
    }

    fn octal(&mut self, first: char) -> Result<char, PatternError> {
        let mut v = first.to_digit(8).unwrap_or(0);
        for _ in 0..2 {
            match self.peek().and_then(|c| c.to_digit(8)) {
                Some(d) => {
                    v = v * 8 + d;
                    self.pos += 1;
                }
                None => break,
            }
        }
        if v > 0o377 {
            return self.err("octal escape value outside of range 0-0o377");
        }
        Ok(char::from_u32(v).unwrap_or('\0'))
    }

    /// Escapes valid both inside and outside classes.
    fn common_escape(&mut self, c: char) -> Result<Option<char>, PatternError> {
        Ok(Some(match c {
            'n' => '\n',
            't' => '\t',
            'r' => '\r',
            'f' => '\x0c',
            'v' => '\x0b',
            'a' => '\x07',
            'x' => self.hex(2)?,
            'u' => self.hex(4)?,
            'U' => self.hex(8)?,
            'N' => return self.err("\\N{...} escapes are not supported"),
            c if c.is_ascii_alphabetic() => return Ok(None),
            c => c,
        }))
    }

    fn parse_escape(&mut self) -> Result<Node, PatternError> {
        let Some(c) = self.peek() else {
            return self.err("bad escape (end of pattern)");
        };
        self.pos += 1;
        Ok(match c {
            'A' => Node::TextStart,
            'Z' => Node::TextEnd,
            'b' => Node::WordBoundary(true),
            'B' => Node::WordBoundary(false),
            'd' => Node::Perl(Perl::Digit, false),
            'D' => Node::Perl(Perl::Digit, true),
            'w' => Node::Perl(Perl::Word, false),
            'W' => Node::Perl(Perl::Word, true),
            's' => Node::Perl(Perl::Space, false),
            'S' => Node::Perl(Perl::Space, true),
            '0' => Node::Char(self.octal('0')?),
            '1'..='9' => {
                // three octal digits form an octal escape, otherwise a group reference
                let d2 = self.peek();
                let d3 = self.peek_at(1);
                if c <= '7'
                    && d2.is_some_and(|d| ('0'..='7').contains(&d))
                    && d3.is_some_and(|d| ('0'..='7').contains(&d))
                {
                    return Ok(Node::Char(self.octal(c)?));
                }
                let mut num = c.to_digit(10).unwrap_or(0) as usize;
                if let Some(d) = d2.and_then(|d| d.to_digit(10)) {
                    num = num * 10 + d as usize;
                    self.pos += 1;
                }
                if num >= self.names.len() {
                    return self.err(format!("invalid group reference {num}"));
                }
                if self.open.contains(&num) {
                    return self.err("cannot refer to an open group");
                }
                Node::Backref(num)
            }
            c => match self.common_escape(c)? {
                Some(ch) => Node::Char(ch),
                None => return self.err(format!("bad escape \\{c}")),
            },
        })
    }

    fn class_atom(&mut self) -> Result<ClassItem, PatternError> {
        let c = self.chars[self.pos];
        self.pos += 1;
        if c != '\\' {
            return Ok(ClassItem::Char(c));
        }
        let Some(e) = self.peek() else {
            return self.err("bad escape (end of pattern)");
        };
        self.pos += 1;
        Ok(match e {
            'd' => ClassItem::Perl(Perl::Digit, false),
            'D' => ClassItem::Perl(Perl::Digit, true),
            'w' => ClassItem::Perl(Perl::Word, false),
            'W' => ClassItem::Perl(Perl::Word, true),
            's' => ClassItem::Perl(Perl::Space, false),
            'S' => ClassItem::Perl(Perl::Space, true),
            'b' => ClassItem::Char('\x08'),
            '0'..='7' => ClassItem::Char(self.octal(e)?),
            '8' | '9' => return self.err(format!("bad escape \\{e}")),
            e => match self.common_escape(e)? {
                Some(ch) => ClassItem::Char(ch),
                None => return self.err(format!("bad escape \\{e}")),
            },
        })
    }

    fn parse_class(&mut self) -> Result<Node, PatternError> {
        let negated = self.eat('^');
        let mut items = Vec::new();
        let mut first = true;
        loop {
            let Some(c) = self.peek() else {
                return self.err("unterminated character set");
            };
            if c == ']' && !first {
                self.pos += 1;
                break;
            }
            first = false;
            let item = self.class_atom()?;
            if self.peek() == Some('-') && self.peek_at(1).is_some_and(|c| c != ']') {
                self.pos += 1;
                let hi = self.class_atom()?;
                match (item, hi) {
                    (ClassItem::Char(a), ClassItem::Char(b)) if a <= b => {
                        items.push(ClassItem::Range(a, b))
                    }
                    _ => return self.err("bad character range"),
                }
            } else {
                items.push(item);
            }
        }
        Ok(Node::Class { negated, items })
    }
}

/// What is known about group participation at a point of the pattern.
type Env = Vec<(usize, bool)>;

fn env_get(env: &Env, g: usize) -> Option<bool> {
    env.iter().rev().find(|(k, _)| *k == g).map(|(_, v)| *v)
}

/// Capturing groups anywhere inside `n`.
fn defined_groups(n: &Node, out: &mut Vec<usize>) {
    match n {
        Node::Group { kind, body, .. } => {
            if let GroupKind::Capture(g) = kind {
                out.push(*g);
            }
            body.iter().flatten().for_each(|c| defined_groups(c, out));
        }
        Node::Cond { yes, no, .. } => yes.iter().chain(no).for_each(|c| defined_groups(c, out)),
        Node::Split { branches, .. } => branches
            .iter()
            .flatten()
            .for_each(|c| defined_groups(c, out)),
        Node::Repeat { node, .. } => defined_groups(node, out),
        _ => {}
    }
}

/// Groups that take part in every match of `n`.
fn certain_groups(n: &Node, out: &mut Vec<usize>) {
    match n {
        Node::Group { kind, body, .. } => {
            if let GroupKind::Capture(g) = kind {
                out.push(*g);
            }
            if body.len() == 1 && !matches!(kind, GroupKind::Look { .. }) {
                body[0].iter().for_each(|c| certain_groups(c, out));
            }
        }
        Node::Split { branches, .. } if branches.len() == 1 => {
            branches[0].iter().for_each(|c| certain_groups(c, out))
        }
        Node::Repeat { node, min, .. } if *min >= 1 => certain_groups(node, out),
        _ => {}
    }
}

/// Groups a conditional anywhere inside `n` asks about.
fn cond_refs(n: &Node, out: &mut Vec<usize>) {
    match n {
        Node::Group { body, .. } => body.iter().flatten().for_each(|c| cond_refs(c, out)),
        Node::Cond { group, yes, no } => {
            out.push(*group);
            yes.iter().chain(no).for_each(|c| cond_refs(c, out));
        }
        Node::Split { branches, .. } => branches.iter().flatten().for_each(|c| cond_refs(c, out)),
        Node::Repeat { node, .. } => cond_refs(node, out),
        _ => {}
    }
}

fn empty_group(body: Alt) -> Node {
    Node::Group {
        kind: GroupKind::NonCapture,
        flags_on: Flags::default(),
        flags_off: Flags::default(),
        body,
    }
}

/// The ways `n` can match, in the backtracker's order of preference, when
/// `n` is an optional item or an alternation (the choice points that decide
/// whether a group takes part).
fn choices(n: &Node) -> Option<Vec<Node>> {
    match n {
        Node::Repeat {
            node,
            min: 0,
            max: Some(1),
            greedy,
            possessive: false,
        } => {
            let take = (**node).clone();
            let skip = empty_group(vec![Vec::new()]);
            Some(if *greedy {
                vec![take, skip]
            } else {
                vec![skip, take]
            })
        }
        Node::Group {
            kind: kind @ (GroupKind::Capture(_) | GroupKind::NonCapture),
            flags_on,
            flags_off,
            body,
        } if body.len() > 1 => Some(
            body.iter()
                .map(|alt| Node::Group {
                    kind: kind.clone(),
                    flags_on: *flags_on,
                    flags_off: *flags_off,
                    body: vec![alt.clone()],
                })
                .collect(),
        ),
        _ => None,
    }
}

/// Compiles conditionals away: at the choice point that decides a group a
/// later conditional asks about, the rest of the sequence is copied into
/// each choice with the conditional resolved. The backtracker tries the
/// choices in the same order, so matches and captures are unchanged.
/// `None` where a conditional cannot be resolved this way.
fn eliminate(seq: &[Node], env: &Env, ids: &mut usize) -> Option<Concat> {
    let mut env = env.clone();
    let mut out = Vec::new();
    for (i, item) in seq.iter().enumerate() {
        let rest = &seq[i + 1..];
        let mut later = Vec::new();
        rest.iter().for_each(|n| cond_refs(n, &mut later));
        let mut defined = Vec::new();
        defined_groups(item, &mut defined);
        let decided: Vec<usize> = defined
            .into_iter()
            .filter(|g| later.contains(g) && env_get(&env, *g).is_none())
            .collect();
        if decided.is_empty() {
            out.push(resolve(item, &env, ids)?);
            let mut sure = Vec::new();
            certain_groups(item, &mut sure);
            env.extend(sure.into_iter().map(|g| (g, true)));
            continue;
        }
        let mut branches = Vec::new();
        for choice in choices(item)? {
            let mut sure = Vec::new();
            certain_groups(&choice, &mut sure);
            let mut any = Vec::new();
            defined_groups(&choice, &mut any);
            let mut env2 = env.clone();
            for &g in &decided {
                if sure.contains(&g) {
                    env2.push((g, true));
                } else if !any.contains(&g) {
                    env2.push((g, false));
                } else {
                    return None;
                }
            }
            env2.extend(sure.iter().map(|&g| (g, true)));
            let mut branch = vec![resolve(&choice, &env, ids)?];
            branch.extend(eliminate(rest, &env2, ids)?);
            branches.push(branch);
        }
        *ids += 1;
        out.push(Node::Split { id: *ids, branches });
        return Some(out);
    }
    Some(out)
}

/// A copy of `alt` with only the `Split` branches `keep(id, branch)` allows.
fn prune(alt: &Alt, keep: &dyn Fn(usize, usize) -> bool) -> Alt {
    alt.iter()
        .map(|c| c.iter().map(|n| prune_node(n, keep)).collect())
        .collect()
}

fn prune_node(n: &Node, keep: &dyn Fn(usize, usize) -> bool) -> Node {
    let kept = match n {
        Node::Split { id, branches } => &Node::Split {
            id: *id,
            branches: branches
                .iter()
                .enumerate()
                .filter(|(b, _)| keep(*id, *b))
                .map(|(_, c)| c.clone())
                .collect(),
        },
        other => other,
    };
    kept.map_seqs(&mut |c| Some(c.iter().map(|x| prune_node(x, keep)).collect()))
        .unwrap_or_else(|| kept.clone())
}

/// The branches of the `Split` with this id.
fn find_split(alt: &Alt, want: usize) -> Option<&Alt> {
    for n in alt.iter().flatten() {
        let found = match n {
            Node::Split { id, branches } if *id == want => return Some(branches),
            Node::Split { branches, .. } => find_split(branches, want),
            Node::Group { body, .. } => find_split(body, want),
            Node::Repeat { node, .. } => find_in_node(node, want),
            Node::Cond { yes, no, .. } => yes.iter().chain(no).find_map(|x| find_in_node(x, want)),
            _ => None,
        };
        if found.is_some() {
            return found;
        }
    }
    None
}

fn find_in_node(n: &Node, want: usize) -> Option<&Alt> {
    match n {
        Node::Split { id, branches } if *id == want => Some(branches),
        Node::Split { branches, .. } => find_split(branches, want),
        Node::Group { body, .. } => find_split(body, want),
        Node::Repeat { node, .. } => find_in_node(node, want),
        Node::Cond { yes, no, .. } => yes.iter().chain(no).find_map(|x| find_in_node(x, want)),
        _ => None,
    }
}

/// (id, number of branches) of every `Split`, outermost first.
fn split_ids(alt: &Alt, out: &mut Vec<(usize, usize)>) {
    for n in alt.iter().flatten() {
        match n {
            Node::Split { id, branches } => {
                out.push((*id, branches.len()));
                split_ids(branches, out);
            }
            Node::Group { body, .. } => split_ids(body, out),
            Node::Cond { yes, no, .. } => {
                split_ids(&vec![yes.clone()], out);
                split_ids(&vec![no.clone()], out);
            }
            Node::Repeat { node, .. } => split_ids(&vec![vec![(**node).clone()]], out),
            _ => {}
        }
    }
}

/// Resolves the conditionals inside one item with what `env` knows.
fn resolve(n: &Node, env: &Env, ids: &mut usize) -> Option<Node> {
    match n {
        Node::Cond { group, yes, no } => {
            let branch = if env_get(env, *group)? { yes } else { no };
            Some(empty_group(vec![eliminate(branch, env, ids)?]))
        }
        other => other.map_seqs(&mut |c| eliminate(c, env, ids)),
    }
}

impl Node {
    /// A copy with every sequence directly inside replaced by `f` (`None`
    /// if `f` gives `None` for one of them).
    fn map_seqs(&self, f: &mut dyn FnMut(&Concat) -> Option<Concat>) -> Option<Node> {
        let alt = |a: &Alt, f: &mut dyn FnMut(&Concat) -> Option<Concat>| {
            a.iter().map(f).collect::<Option<Alt>>()
        };
        Some(match self {
            Node::Group {
                kind,
                flags_on,
                flags_off,
                body,
            } => Node::Group {
                kind: kind.clone(),
                flags_on: *flags_on,
                flags_off: *flags_off,
                body: alt(body, f)?,
            },
            Node::Split { id, branches } => Node::Split {
                id: *id,
                branches: alt(branches, f)?,
            },
            Node::Cond { group, yes, no } => Node::Cond {
                group: *group,
                yes: f(yes)?,
                no: f(no)?,
            },
            Node::Repeat {
                node,
                min,
                max,
                greedy,
                possessive,
            } => {
                let mut inner = f(&vec![(**node).clone()])?;
                let node = if inner.len() == 1 {
                    inner.pop()?
                } else {
                    empty_group(vec![inner])
                };
                Node::Repeat {
                    node: Box::new(node),
                    min: *min,
                    max: *max,
                    greedy: *greedy,
                    possessive: *possessive,
                }
            }
            other => other.clone(),
        })
    }
}

/// `(?ims)` for the flags in force (empty if none).
fn flag_prefix(flags: Flags) -> String {
    let on: String = [(flags.i, 'i'), (flags.m, 'm'), (flags.s, 's')]
        .iter()
        .filter(|(set, _)| *set)
        .map(|(_, c)| *c)
        .collect();
    if on.is_empty() {
        on
    } else {
        format!("(?{on})")
    }
}

/// Applies Fail2Ban's rewrite of `((?i)x)` / `(?:(?i)x)` to `(?i:x)`.
pub fn glob_to_local_flags(pattern: &str) -> String {
    let b = pattern.as_bytes();
    let mut out = String::with_capacity(pattern.len());
    let mut i = 0;
    while i < pattern.len() {
        if b[i] == b'(' && (i == 0 || b[i - 1] != b'\\') {
            let rest = &pattern[i + 1..];
            let inner = rest.strip_prefix("?:").unwrap_or(rest);
            if let Some(after) = inner.strip_prefix("(?") {
                let letters = after.bytes().take_while(|c| c.is_ascii_lowercase()).count();
                if letters > 0 && after.as_bytes().get(letters) == Some(&b')') {
                    out.push_str("(?");
                    out.push_str(&after[..letters]);
                    out.push(':');
                    i = pattern.len() - after.len() + letters + 1;
                    continue;
                }
            }
        }
        let ch = pattern[i..].chars().next().unwrap_or('\0');
        out.push(ch);
        i += ch.len_utf8();
    }
    out
}

impl PyPattern {
    /// The `Verified` text (for benchmarks and debugging).
    pub fn debug_verified(&self, multiline: bool) -> String {
        self.emit_verified(multiline)
            .map(|v| v.0)
            .unwrap_or_default()
    }

    pub fn parse(src: &str) -> Result<PyPattern, PatternError> {
        let mut p = Parser {
            src,
            chars: src.chars().collect(),
            pos: 0,
            flags: Flags::default(),
            names: vec![None],
            bodies: vec![Vec::new()],
            open: Vec::new(),
        };
        // verbose mode changes tokenizing: honour a leading (?x)
        if let Some(rest) = src.strip_prefix("(?") {
            let letters: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphabetic())
                .collect();
            if letters.contains('x') && rest[letters.len()..].starts_with(')') {
                p.flags.x = true;
            }
        }
        let root = p.parse_alt()?;
        if p.pos < p.chars.len() {
            return p.err("unbalanced parenthesis");
        }
        Ok(PyPattern {
            root,
            flags: p.flags,
            names: p.names,
            bodies: p.bodies,
        })
    }

    /// Whether the pattern needs a backtracking engine.
    pub fn needs_fancy(&self) -> bool {
        fn alt(a: &Alt) -> bool {
            a.iter().any(|c| c.iter().any(node))
        }
        fn node(n: &Node) -> bool {
            match n {
                Node::Group { kind, body, .. } => {
                    matches!(kind, GroupKind::Look { .. } | GroupKind::Atomic) || alt(body)
                }
                Node::Cond { .. } | Node::Backref(_) => true,
                Node::Split { branches, .. } => alt(branches),
                Node::Repeat {
                    node: inner,
                    possessive,
                    ..
                } => *possessive || node(inner),
                _ => false,
            }
        }
        alt(&self.root)
    }

    pub fn emit(&self, target: Target, multiline: bool) -> String {
        let mut flags = self.flags;
        flags.m |= multiline;
        let mut out = String::new();
        out.push_str(&flag_prefix(flags));
        let mut e = Emitter::new(self, target);
        e.alt(&self.root, flags, &mut out);
        out
    }

    /// The `Verified` pattern with its checks and group map; `None` if a
    /// construct cannot be checked from the outside. Conditionals are first
    /// compiled away where their group's participation is decided by one
    /// choice point (see [`eliminate`]).
    fn emit_verified(&self, multiline: bool) -> Option<(String, Vec<CheckSpec>, Vec<Vec<usize>>)> {
        self.emit_verified_root(
            &self.eliminated().unwrap_or_else(|| self.root.clone()),
            multiline,
        )
    }

    /// The pattern with its conditionals compiled away, if possible.
    fn eliminated(&self) -> Option<Alt> {
        let mut ids = 0;
        self.root
            .iter()
            .map(|c| eliminate(c, &Env::new(), &mut ids))
            .collect()
    }

    /// Plain `regex`-crate text (over-approximation) of another root.
    fn emit_approx_root(&self, root: &Alt, multiline: bool) -> String {
        let mut flags = self.flags;
        flags.m |= multiline;
        let mut out = String::new();
        out.push_str(&flag_prefix(flags));
        let mut e = Emitter::new(self, Target::Approx);
        e.in_backref_copy = true; // no captures needed
        e.alt(root, flags, &mut out);
        out
    }

    fn emit_verified_root(
        &self,
        root: &Alt,
        multiline: bool,
    ) -> Option<(String, Vec<CheckSpec>, Vec<Vec<usize>>)> {
        let mut flags = self.flags;
        flags.m |= multiline;
        let mut out = String::new();
        out.push_str(&flag_prefix(flags));
        let mut e = Emitter::new(self, Target::Verified);
        e.alt(root, flags, &mut out);
        let conds_ok = e.checks.iter().all(|c| match c {
            CheckSpec::Cond { group, .. } | CheckSpec::Backref { group, .. } => !e.repeated[*group],
            _ => true,
        });
        (!e.unverifiable && conds_ok).then_some((out, e.checks, e.py_to_rust))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// The `regex` crate; only for patterns without fancy features.
    Std,
    /// `fancy-regex`.
    Fancy,
    /// A `regex`-crate pattern that matches at least everything the
    /// original matches (look-around dropped, conditionals as alternation,
    /// back-references as a copy of the group).
    Approx,
    /// Like `Approx`, with marker groups where the dropped constructs were,
    /// so that a match can be checked against them afterwards.
    Verified,
}

/// A construct the `Verified` pattern dropped, to check after a match.
#[derive(Debug, Clone)]
enum CheckSpec {
    /// `(?(group)yes|no)`: the branch taken must agree with the group.
    Cond { group: usize, yes: usize },
    /// `(?P=group)`: the marker's text must equal the group's.
    Backref {
        group: usize,
        marker: usize,
        caseless: bool,
    },
    /// `(?=...)` and friends at the marker's position.
    Look {
        marker: usize,
        behind: bool,
        negate: bool,
        body: String,
    },
    /// `(?:(?!L).)*`: `L` may start at no position inside the marker.
    Tempered { marker: usize, body: String },
}

struct Emitter<'p> {
    pat: &'p PyPattern,
    target: Target,
    in_backref_copy: bool,
    /// Rust capture groups emitted so far (group 0 is the whole match).
    groups: usize,
    /// Python group number -> Rust group numbers (several where conditional
    /// elimination copied a group into several branches).
    py_to_rust: Vec<Vec<usize>>,
    /// Python groups that sit inside a repetition.
    repeated: Vec<bool>,
    rep_depth: usize,
    checks: Vec<CheckSpec>,
    /// A construct the `Verified` target cannot check was met.
    unverifiable: bool,
}

impl<'p> Emitter<'p> {
    fn new(pat: &'p PyPattern, target: Target) -> Emitter<'p> {
        Emitter {
            pat,
            target,
            in_backref_copy: false,
            groups: 1,
            py_to_rust: vec![Vec::new(); pat.names.len()],
            repeated: vec![false; pat.names.len()],
            rep_depth: 0,
            checks: Vec::new(),
            unverifiable: false,
        }
    }

    fn marker(&mut self, out: &mut String) -> usize {
        let idx = self.groups;
        self.groups += 1;
        let _ = write!(out, "(?P<__bhv{idx}>");
        idx
    }

    /// The standalone `regex`-crate text of a look-around body.
    fn body_text(&self, body: &Alt, flags: Flags) -> Option<String> {
        let sub = PyPattern {
            root: body.clone(),
            flags: Flags::default(),
            names: self.pat.names.clone(),
            bodies: self.pat.bodies.clone(),
        };
        if sub.needs_fancy() {
            return None;
        }
        let mut e = Emitter::new(self.pat, Target::Std);
        e.in_backref_copy = true; // no captures inside
        let mut text = String::new();
        text.push_str(&flag_prefix(flags));
        text.push_str("(?:");
        e.alt(body, flags, &mut text);
        text.push(')');
        Some(text)
    }
}

/// `(?:(?!L)C)` with a single-character `C`: the tempered token.
fn tempered_parts(node: &Node) -> Option<(&Alt, &Node)> {
    let Node::Group {
        kind: GroupKind::NonCapture,
        body,
        flags_on,
        flags_off,
    } = node
    else {
        return None;
    };
    if body.len() != 1
        || body[0].len() != 2
        || *flags_on != Flags::default()
        || *flags_off != Flags::default()
    {
        return None;
    }
    let Node::Group {
        kind: GroupKind::Look {
            behind: false,
            negate: true,
        },
        body: look,
        ..
    } = &body[0][0]
    else {
        return None;
    };
    matches!(
        body[0][1],
        Node::Any | Node::Class { .. } | Node::Perl(..) | Node::Char(_)
    )
    .then_some((look, &body[0][1]))
}

fn push_escaped(out: &mut String, c: char) {
    if regex_syntax::is_meta_character(c) {
        out.push('\\');
        out.push(c);
    } else if c == '\n' {
        out.push_str("\\n");
    } else if c.is_whitespace() || c.is_control() {
        let _ = write!(out, "\\x{{{:X}}}", c as u32);
    } else {
        out.push(c);
    }
}

fn push_class_char(out: &mut String, c: char) {
    if c.is_ascii_alphanumeric() || (!c.is_ascii() && !c.is_whitespace() && !c.is_control()) {
        out.push(c);
    } else {
        let _ = write!(out, "\\x{{{:X}}}", c as u32);
    }
}

fn perl_text(p: Perl, negated: bool) -> &'static str {
    match (p, negated) {
        (Perl::Digit, false) => "\\d",
        (Perl::Digit, true) => "\\D",
        (Perl::Word, false) => "\\w",
        (Perl::Word, true) => "\\W",
        (Perl::Space, false) => "\\s",
        (Perl::Space, true) => "\\S",
    }
}

impl Emitter<'_> {
    fn alt(&mut self, alt: &Alt, flags: Flags, out: &mut String) {
        for (i, c) in alt.iter().enumerate() {
            if i > 0 {
                out.push('|');
            }
            for n in c {
                self.node(n, flags, out);
            }
        }
    }

    fn node(&mut self, n: &Node, flags: Flags, out: &mut String) {
        let approx = matches!(self.target, Target::Approx | Target::Verified);
        let verified = self.target == Target::Verified && !self.in_backref_copy;
        match n {
            Node::Char(c) => push_escaped(out, *c),
            Node::Any => out.push('.'),
            Node::Class { negated, items } => {
                out.push('[');
                if *negated {
                    out.push('^');
                }
                for it in items {
                    match it {
                        ClassItem::Char(c) => push_class_char(out, *c),
                        ClassItem::Range(a, b) => {
                            push_class_char(out, *a);
                            out.push('-');
                            push_class_char(out, *b);
                        }
                        ClassItem::Perl(p, neg) => out.push_str(perl_text(*p, *neg)),
                    }
                }
                out.push(']');
            }
            Node::Perl(p, neg) => out.push_str(perl_text(*p, *neg)),
            Node::LineStart if self.in_backref_copy => out.push_str("(?:)"),
            Node::LineEnd if self.in_backref_copy => out.push_str("(?:)"),
            Node::TextStart | Node::TextEnd | Node::WordBoundary(_) | Node::NotInsideWord
                if self.in_backref_copy =>
            {
                out.push_str("(?:)")
            }
            Node::LineStart => out.push('^'),
            Node::LineEnd => out.push_str(if flags.m { "$" } else { "(?m:$)" }),
            Node::TextStart => out.push_str("\\A"),
            Node::TextEnd => out.push_str("\\z"),
            Node::WordBoundary(true) => out.push_str("\\b"),
            Node::WordBoundary(false) => out.push_str("\\B"),
            Node::NotInsideWord => out.push_str(match self.target {
                Target::Fancy => "(?:\\b|(?=\\W)|\\A|\\z)",
                _ => "(?:\\b{start-half}|\\b{end-half})",
            }),
            Node::Group {
                kind,
                flags_on,
                flags_off,
                body,
            } => {
                let mut inner = flags;
                inner.i = (inner.i || flags_on.i) && !flags_off.i;
                inner.m = (inner.m || flags_on.m) && !flags_off.m;
                inner.s = (inner.s || flags_on.s) && !flags_off.s;
                match kind {
                    GroupKind::Look { behind, negate } if verified => {
                        if self.rep_depth > 0 {
                            self.unverifiable = true;
                            out.push_str("(?:)");
                            return;
                        }
                        match self.body_text(body, inner) {
                            Some(text) => {
                                let marker = self.marker(out);
                                out.push(')');
                                self.checks.push(CheckSpec::Look {
                                    marker,
                                    behind: *behind,
                                    negate: *negate,
                                    body: text,
                                });
                            }
                            None => {
                                self.unverifiable = true;
                                out.push_str("(?:)");
                            }
                        }
                        return;
                    }
                    GroupKind::Look { .. } if approx => {
                        out.push_str("(?:)");
                        return;
                    }
                    GroupKind::Atomic if verified => {
                        self.unverifiable = true;
                        out.push_str("(?:");
                    }
                    GroupKind::Look { behind, negate } => out.push_str(match (behind, negate) {
                        (false, false) => "(?=",
                        (false, true) => "(?!",
                        (true, false) => "(?<=",
                        (true, true) => "(?<!",
                    }),
                    GroupKind::Capture(idx) if !self.in_backref_copy => {
                        let copy = self.py_to_rust[*idx].len();
                        self.py_to_rust[*idx].push(self.groups);
                        self.repeated[*idx] |= self.rep_depth > 0;
                        self.groups += 1;
                        match &self.pat.names[*idx] {
                            Some(name) if copy == 0 => {
                                let _ = write!(out, "(?P<{name}>");
                            }
                            Some(name) => {
                                let _ = write!(out, "(?P<{name}__bhd{copy}>");
                            }
                            None => out.push('('),
                        }
                    }
                    GroupKind::Atomic if self.target == Target::Fancy => out.push_str("(?>"),
                    _ => {
                        let mut f = String::new();
                        for (on, c) in [(flags_on.i, 'i'), (flags_on.m, 'm'), (flags_on.s, 's')] {
                            if on {
                                f.push(c);
                            }
                        }
                        let mut g = String::new();
                        for (on, c) in [(flags_off.i, 'i'), (flags_off.m, 'm'), (flags_off.s, 's')]
                        {
                            if on {
                                g.push(c);
                            }
                        }
                        if !g.is_empty() {
                            f.push('-');
                            f.push_str(&g);
                        }
                        let _ = write!(out, "(?{f}:");
                    }
                }
                self.alt(body, inner, out);
                out.push(')');
            }
            Node::Split { branches, .. } => {
                out.push_str("(?:");
                self.alt(branches, flags, out);
                out.push(')');
            }
            Node::Cond { group, yes, no } => {
                // verified: `(?:(?P<marker>yes)|(?:no))`, checked afterwards;
                // approx: `(?:yes|no)`; fancy: `(?(group)yes|no)`
                let yes_marker = if verified {
                    if self.rep_depth > 0 {
                        self.unverifiable = true;
                    }
                    out.push_str("(?:");
                    Some(self.marker(out))
                } else if approx {
                    out.push_str("(?:");
                    None
                } else {
                    let _ = write!(out, "(?({group})");
                    None
                };
                for y in yes {
                    self.node(y, flags, out);
                }
                out.push_str(if verified { ")|(?:" } else { "|" });
                for y in no {
                    self.node(y, flags, out);
                }
                out.push_str(if verified { "))" } else { ")" });
                if let Some(yes) = yes_marker {
                    self.checks.push(CheckSpec::Cond { group: *group, yes });
                }
            }
            Node::Backref(g) => {
                if verified {
                    if self.rep_depth > 0 {
                        self.unverifiable = true;
                    }
                    let marker = self.marker(out);
                    let saved = self.in_backref_copy;
                    self.in_backref_copy = true;
                    let body = self.pat.bodies[*g].clone();
                    self.alt(&body, flags, out);
                    self.in_backref_copy = saved;
                    out.push(')');
                    self.checks.push(CheckSpec::Backref {
                        group: *g,
                        marker,
                        caseless: flags.i,
                    });
                } else if approx {
                    let saved = self.in_backref_copy;
                    self.in_backref_copy = true;
                    out.push_str("(?:");
                    let body = self.pat.bodies[*g].clone();
                    self.alt(&body, flags, out);
                    out.push(')');
                    self.in_backref_copy = saved;
                } else {
                    let _ = write!(out, "\\{g}");
                }
            }
            Node::Repeat {
                node,
                min,
                max,
                greedy,
                possessive,
            } => {
                let atomic_wrap = *possessive && self.target == Target::Fancy;
                if *possessive && verified {
                    self.unverifiable = true;
                }
                let tempered = if verified && self.rep_depth == 0 {
                    tempered_parts(node)
                } else {
                    None
                };
                let tempered =
                    tempered.and_then(|(look, c)| self.body_text(look, flags).map(|b| (b, c)));
                let mut tempered_marker = None;
                if let Some((body, c)) = tempered {
                    let marker = self.marker(out);
                    tempered_marker = Some(marker);
                    self.checks.push(CheckSpec::Tempered { marker, body });
                    out.push_str("(?:");
                    self.node(c, flags, out);
                    out.push(')');
                } else {
                    if atomic_wrap {
                        out.push_str("(?>");
                    }
                    out.push_str("(?:");
                    // an optional item (at most once) keeps simple capture
                    // semantics: it took part in the match or it did not
                    let repeats = *max != Some(1);
                    self.rep_depth += usize::from(repeats);
                    self.node(node, flags, out);
                    self.rep_depth -= usize::from(repeats);
                    out.push(')');
                }
                match (min, max) {
                    (0, None) => out.push('*'),
                    (1, None) => out.push('+'),
                    (0, Some(1)) => out.push('?'),
                    (m, None) => {
                        let _ = write!(out, "{{{m},}}");
                    }
                    (m, Some(x)) if m == x => {
                        let _ = write!(out, "{{{m}}}");
                    }
                    (m, Some(x)) => {
                        let _ = write!(out, "{{{m},{x}}}");
                    }
                }
                if !greedy {
                    out.push('?');
                }
                if tempered_marker.is_some() || atomic_wrap {
                    out.push(')');
                }
            }
        }
    }
}

/// How long a backtracking search may run before it is abandoned (and the
/// line treated as not matching, with a counted error).
pub const BACKTRACK_LIMIT: usize = 1_000_000;

/// A compiled pattern on the best engine it allows.
#[derive(Debug)]
pub struct Pattern {
    /// Unique per compiled pattern: keys its capture buffers in [`Slots`].
    id: usize,
    source: String,
    engine: Engine,
    names: Vec<Option<String>>,
    tail: Option<TailGroup>,
}

/// A pattern that ends in `(?P<g>.+)$` or `(?P<g>.*)$` (Fail2Ban's
/// `<F-CONTENT>.+</F-CONTENT>$` prefregex idiom). On a single line the
/// tail always runs to the end of the line, so only the part before it is
/// matched with captures, and `g` is the rest of the line: the capture
/// engine reads a short prefix instead of the whole line.
#[derive(Debug)]
struct TailGroup {
    /// The pattern without the tail (with one `.` if the tail needs a character).
    head: FastRegex,
    head_id: usize,
    group: usize,
    needs_char: bool,
}

impl PyPattern {
    /// (head pattern, tail group, tail needs a character) if the pattern
    /// ends with a greedy dot-star group followed by `$` (not multi-line).
    fn split_tail(&self, multiline: bool) -> Option<(PyPattern, usize, bool)> {
        if self.root.len() != 1 || self.flags.m || self.flags.s || multiline {
            return None;
        }
        let seq = &self.root[0];
        let [.., group, Node::LineEnd] = seq.as_slice() else {
            return None;
        };
        let Node::Group {
            kind: GroupKind::Capture(g),
            body,
            flags_on,
            flags_off,
        } = group
        else {
            return None;
        };
        if *g + 1 != self.names.len()
            || *flags_on != Flags::default()
            || *flags_off != Flags::default()
            || body.len() != 1
        {
            return None;
        }
        let [Node::Repeat {
            node,
            min,
            max: None,
            greedy: true,
            possessive: false,
        }] = body[0].as_slice()
        else {
            return None;
        };
        if !matches!(**node, Node::Any) || *min > 1 {
            return None;
        }
        let mut head_seq: Concat = seq[..seq.len() - 2].to_vec();
        if *min == 1 {
            head_seq.push(Node::Any);
        }
        let head = PyPattern {
            root: vec![head_seq],
            flags: self.flags,
            names: self.names[..*g].to_vec(),
            bodies: self.bodies[..*g].to_vec(),
        };
        (!head.needs_fancy()).then_some((head, *g, *min == 1))
    }
}

#[derive(Debug)]
enum Engine {
    Std(FastRegex),
    Fancy {
        exact: Box<fancy_regex::Regex>,
        approx: FastRegex,
    },
    /// Look-around, conditionals and back-references checked after a
    /// `regex`-crate match of the over-approximation; the backtracking
    /// engine runs only when a check fails (the fast path's highest-priority
    /// match was not a match of the original pattern).
    Verified {
        core: Arc<VerifiedCore>,
        /// Branch pruning for patterns whose conditionals were compiled away.
        splits: Option<Box<Splits>>,
        exact: Box<fancy_regex::Regex>,
        /// Whole answers by the shape of the haystack (see [`Outer`]).
        outer: Option<Outer>,
    },
}

/// The answers of a `Verified` pattern (its Python groups) remembered by
/// the shape of the whole haystack under `classes`: the common refinement
/// of the full core's classes (with its checks') and of the bytes of the
/// branch-pruning literals. Which literals a haystack contains is then a
/// function of its shape, so is the pruned core it selects, and when that
/// core's own classes are coarser than `classes` (checked per core), so is
/// its answer. A hit skips pruning, capture search, checks and group
/// mapping. Answers of the backtracking fallback are not remembered.
#[derive(Debug)]
struct Outer {
    classes: Box<[u8; 256]>,
    /// Keys this pattern's cache in [`Slots`].
    id: usize,
}

impl Outer {
    fn new(core: &VerifiedCore, splits: Option<&Splits>) -> Option<Outer> {
        let mut tables = vec![core.classes.clone()?];
        if let Some(sp) = splits {
            // each byte of a literal alone in its class
            let mut singles = Box::new([0u8; 256]);
            let mut next = 0u8;
            for &b in sp.literal_bytes.iter().flatten() {
                if singles[usize::from(b)] == 0 {
                    next = next.checked_add(1)?;
                    singles[usize::from(b)] = next;
                }
            }
            tables.push(singles);
        }
        Some(Outer {
            classes: refine(&tables)?,
            id: next_pattern_id(),
        })
    }
}

/// The common refinement of byte class tables: two bytes share a class
/// exactly when they share one in every table.
fn refine(tables: &[Box<[u8; 256]>]) -> Option<Box<[u8; 256]>> {
    let mut out = Box::new([0u8; 256]);
    let mut seen: std::collections::HashMap<Vec<u8>, u8> = std::collections::HashMap::new();
    for (b, class) in out.iter_mut().enumerate() {
        let key: Vec<u8> = tables.iter().map(|t| t[b]).collect();
        // at most 256 keys, numbered from 0
        let n = u8::try_from(seen.len()).ok()?;
        *class = *seen.entry(key).or_insert(n);
    }
    Some(out)
}

/// Whether every two bytes of one class in `fine` share a class in `coarse`.
fn is_coarser(coarse: &[u8; 256], fine: &[u8; 256]) -> bool {
    let mut to: [Option<u8>; 256] = [None; 256];
    (0..256).all(|b| {
        let slot = &mut to[usize::from(fine[b])];
        *slot.get_or_insert(coarse[b]) == coarse[b]
    })
}

/// The `regex`-crate side of a `Verified` pattern.
#[derive(Debug)]
struct VerifiedCore {
    id: usize,
    approx: FastRegex,
    checks: Vec<Check>,
    /// Python group number -> group numbers in `approx`.
    map: Vec<Vec<usize>>,
    /// Byte classes of the approximation and of every check together:
    /// two ASCII haystacks of the same shape under them get the same
    /// answer. None if a check compares texts (a back-reference) or a
    /// class table cannot be made.
    classes: Option<Box<[u8; 256]>>,
    /// Whether `classes` is coarser than the pattern's [`Engine::Verified`]
    /// `outer` table (decided on first use).
    fits_outer: OnceLock<bool>,
}

impl VerifiedCore {
    fn new(
        py: &PyPattern,
        root: &Alt,
        multiline: bool,
        src: &str,
    ) -> Result<Option<VerifiedCore>, PatternError> {
        let Some((text, specs, map)) = py.emit_verified_root(root, multiline) else {
            return Ok(None);
        };
        let approx = FastRegex::new(&text, src)?;
        let mut tables: Option<Vec<Box<[u8; 256]>>> = approx.classes.clone().map(|c| vec![c]);
        for spec in &specs {
            let table = match spec {
                CheckSpec::Cond { .. } => continue,
                CheckSpec::Backref { .. } => None,
                CheckSpec::Look { body, .. } | CheckSpec::Tempered { body, .. } => {
                    byte_classes(body)
                }
            };
            match (table, tables.as_mut()) {
                (Some(t), Some(all)) => all.push(t),
                _ => tables = None,
            }
        }
        Ok(Some(VerifiedCore {
            id: next_pattern_id(),
            approx,
            checks: specs
                .into_iter()
                .map(|c| compile_check(c, src))
                .collect::<Result<_, _>>()?,
            map,
            classes: tables.and_then(|t| refine(&t)),
            fits_outer: OnceLock::new(),
        }))
    }

    /// Whether this core's answers depend only on shapes under `outer`.
    fn fits(&self, outer: &[u8; 256]) -> bool {
        *self
            .fits_outer
            .get_or_init(|| self.classes.as_ref().is_some_and(|c| is_coarser(c, outer)))
    }

    /// Some(true/false) if the fast path decides; None if a check failed.
    fn search(&self, hay: &str, start: usize, names: usize, slots: &mut Slots) -> Option<bool> {
        if !self.approx.captures_at(self.id, hay, start, slots) {
            return Some(false);
        }
        if !self
            .checks
            .iter()
            .all(|c| c.holds(hay, &slots.raw, &self.map))
        {
            return None;
        }
        let raw = &slots.raw;
        slots
            .spans
            .extend((0..names).map(|g| mapped(raw, &self.map, g)));
        Some(true)
    }
}

/// Conditional elimination copies the rest of a pattern into each branch
/// of the choice that decides the condition, so the capture engine walks
/// through branches that cannot match before it reaches the one that does
/// (sshd's `Failed ...` regex: four copies of its tail). A branch runs to
/// the end of the pattern, so a path through it needs the text to contain
/// one of the branch's required literals; one Aho-Corasick pass tells which
/// branches cannot match, and those are dropped before the capture engine
/// runs. Dropping a branch with no match changes no result: no successful
/// path runs through it.
#[derive(Debug)]
struct Splits {
    py: PyPattern,
    root: Alt,
    multiline: bool,
    src: String,
    /// (split id, branch) of each test.
    tests: Vec<(usize, usize)>,
    literals: aho_corasick::AhoCorasick,
    /// The literals' text (for [`Outer`]).
    literal_bytes: Vec<Vec<u8>>,
    /// Per test: sets of literal indices; each set needs one literal present.
    needs: Vec<Vec<Vec<usize>>>,
    variants: std::sync::RwLock<std::collections::HashMap<u64, Option<Arc<VerifiedCore>>>>,
}

impl Splits {
    fn new(py: &PyPattern, root: Alt, multiline: bool, src: &str) -> Option<Splits> {
        let mut ids = Vec::new();
        split_ids(&root, &mut ids);
        let tests: Vec<(usize, usize)> = ids
            .iter()
            .flat_map(|&(id, n)| (0..n).map(move |b| (id, b)))
            .collect();
        if ids.is_empty() || tests.len() > 64 {
            return None;
        }
        let mut lits: Vec<Vec<u8>> = Vec::new();
        let mut needs = Vec::new();
        for &(id, b) in &tests {
            let branch = find_split(&root, id)
                .map(|br| vec![br[b].clone()])
                .unwrap_or_default();
            let text = py.emit_approx_root(&branch, multiline);
            let sets: Vec<Vec<usize>> = crate::filter::prefilter::all_requirements(&text)
                .into_iter()
                .map(|set| {
                    set.into_iter()
                        .map(|l| match lits.iter().position(|x| *x == l) {
                            Some(k) => k,
                            None => {
                                lits.push(l);
                                lits.len() - 1
                            }
                        })
                        .collect()
                })
                .collect();
            needs.push(sets);
        }
        if lits.is_empty() || lits.len() > 128 {
            return None;
        }
        let literals = aho_corasick::AhoCorasick::builder()
            .match_kind(aho_corasick::MatchKind::Standard)
            .build(&lits)
            .ok()?;
        Some(Splits {
            py: py.clone(),
            root,
            multiline,
            src: src.to_string(),
            tests,
            literals,
            literal_bytes: lits,
            needs,
            variants: Default::default(),
        })
    }

    /// The core for the branches that can match `hay`.
    fn select(&self, hay: &str, full: &Arc<VerifiedCore>) -> Arc<VerifiedCore> {
        let mut present = 0u128;
        for m in self.literals.find_overlapping_iter(hay) {
            present |= 1 << m.pattern().as_usize();
        }
        let mut mask = 0u64;
        for (t, sets) in self.needs.iter().enumerate() {
            if sets
                .iter()
                .all(|set| set.iter().any(|&k| present & (1 << k) != 0))
            {
                mask |= 1 << t;
            }
        }
        let all = if self.tests.len() == 64 {
            u64::MAX
        } else {
            (1u64 << self.tests.len()) - 1
        };
        if mask == all {
            return full.clone();
        }
        if let Some(v) = self
            .variants
            .read()
            .ok()
            .and_then(|m| m.get(&mask).cloned())
        {
            return v.unwrap_or_else(|| full.clone());
        }
        let keep = |id: usize, b: usize| {
            let i = self.tests.iter().position(|&t| t == (id, b));
            // an inner choice with no viable branch keeps them all: it is
            // only reached through branches that are pruned anyway
            let any = self
                .tests
                .iter()
                .enumerate()
                .any(|(k, &(tid, _))| tid == id && mask & (1 << k) != 0);
            !any || i.is_some_and(|i| mask & (1 << i) != 0)
        };
        let pruned = prune(&self.root, &keep);
        let core = VerifiedCore::new(&self.py, &pruned, self.multiline, &self.src)
            .ok()
            .flatten()
            .map(Arc::new);
        if let Ok(mut m) = self.variants.write() {
            if m.len() < 256 {
                m.insert(mask, core.clone());
            }
        }
        core.unwrap_or_else(|| full.clone())
    }
}

fn next_pattern_id() -> usize {
    static NEXT_ID: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(1);
    NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// The span of Python group `g` in a `Verified` match.
fn mapped(raw: &[Option<(usize, usize)>], map: &[Vec<usize>], g: usize) -> Option<(usize, usize)> {
    if g == 0 {
        return raw.first().copied().flatten();
    }
    map.get(g)?
        .iter()
        .find_map(|&r| raw.get(r).copied().flatten())
}

#[derive(Debug)]
enum Check {
    Cond {
        group: usize,
        yes: usize,
    },
    Backref {
        group: usize,
        marker: usize,
        caseless: bool,
    },
    Ahead {
        marker: usize,
        negate: bool,
        re: regex_automata::meta::Regex,
    },
    Behind {
        marker: usize,
        negate: bool,
        re: regex_automata::meta::Regex,
    },
    Tempered {
        marker: usize,
        test: Tempered,
    },
}

#[derive(Debug)]
enum Tempered {
    Literal(Box<memchr::memmem::Finder<'static>>),
    Regex(regex_automata::meta::Regex),
}

fn starts_here(re: &regex_automata::meta::Regex, hay: &str, at: usize) -> bool {
    let input = regex_automata::Input::new(hay)
        .range(at..)
        .anchored(regex_automata::Anchored::Yes);
    re.search_half(&input).is_some()
}

impl Check {
    fn holds(&self, hay: &str, raw: &[Option<(usize, usize)>], map: &[Vec<usize>]) -> bool {
        let get = |i: usize| raw.get(i).copied().flatten();
        match self {
            Check::Cond { group, yes } => mapped(raw, map, *group).is_some() == get(*yes).is_some(),
            Check::Backref {
                group,
                marker,
                caseless,
            } => {
                let (Some((gs, ge)), Some((ms, me))) = (mapped(raw, map, *group), get(*marker))
                else {
                    return false;
                };
                let (a, b) = (&hay[gs..ge], &hay[ms..me]);
                if *caseless {
                    a.to_lowercase() == b.to_lowercase()
                } else {
                    a == b
                }
            }
            Check::Ahead { marker, negate, re } => match get(*marker) {
                Some((p, _)) => starts_here(re, hay, p) != *negate,
                None => true,
            },
            Check::Behind { marker, negate, re } => match get(*marker) {
                Some((p, _)) => re.is_match(&hay[..p]) != *negate,
                None => true,
            },
            Check::Tempered { marker, test } => {
                let Some((s, e)) = get(*marker) else {
                    return true;
                };
                match test {
                    Tempered::Literal(f) => {
                        let end = (e + f.needle().len()).saturating_sub(1).min(hay.len());
                        s >= end || f.find(&hay.as_bytes()[s..end]).is_none_or(|p| s + p >= e)
                    }
                    Tempered::Regex(re) => {
                        let mut p = s;
                        while p < e {
                            if starts_here(re, hay, p) {
                                return false;
                            }
                            p += hay[p..].chars().next().map_or(1, char::len_utf8);
                        }
                        true
                    }
                }
            }
        }
    }
}

fn build_meta(pattern: &str, src: &str) -> Result<regex_automata::meta::Regex, PatternError> {
    regex_automata::meta::Regex::new(pattern).map_err(|e| PatternError::Compile {
        pattern: src.to_string(),
        msg: e.to_string(),
    })
}

fn compile_check(spec: CheckSpec, src: &str) -> Result<Check, PatternError> {
    Ok(match spec {
        CheckSpec::Cond { group, yes } => Check::Cond { group, yes },
        CheckSpec::Backref {
            group,
            marker,
            caseless,
        } => Check::Backref {
            group,
            marker,
            caseless,
        },
        CheckSpec::Look {
            marker,
            behind: false,
            negate,
            body,
        } => Check::Ahead {
            marker,
            negate,
            re: build_meta(&body, src)?,
        },
        CheckSpec::Look {
            marker,
            behind: true,
            negate,
            body,
        } => Check::Behind {
            marker,
            negate,
            re: build_meta(&format!("{body}\\z"), src)?,
        },
        CheckSpec::Tempered { marker, body } => {
            let literal =
                regex_syntax::Parser::new()
                    .parse(&body)
                    .ok()
                    .and_then(|h| match h.kind() {
                        regex_syntax::hir::HirKind::Literal(l) => Some(l.0.to_vec()),
                        _ => None,
                    });
            let test = match literal {
                Some(l) if !l.is_empty() => {
                    Tempered::Literal(Box::new(memchr::memmem::Finder::new(&l).into_owned()))
                }
                _ => Tempered::Regex(build_meta(&body, src)?),
            };
            Check::Tempered { marker, test }
        }
    })
}

/// Match positions by Python group number (0 = whole match), reused across
/// searches so that matching allocates nothing once warmed up.
#[derive(Debug, Default)]
pub struct Slots {
    /// Capture buffers of the `regex`-crate patterns used with these slots,
    /// by pattern id (a buffer belongs to the regex that made it).
    locs: Vec<(usize, regex::CaptureLocations)>,
    blocs: Vec<(usize, regex::bytes::CaptureLocations)>,
    /// Caches of the anchored lazy DFAs, by pattern id.
    dfas: Vec<(usize, regex_automata::hybrid::dfa::Cache)>,
    /// Group spans of the last fast-path search, in the engine's numbering.
    raw: Vec<Option<(usize, usize)>>,
    caches: Vec<SpanCache>,
    spans: Vec<Option<(usize, usize)>>,
    /// Searches abandoned at the backtracking limit (treated as no match).
    pub backtrack_limit_hits: u64,
    /// Fast-path matches that failed a check and went to the backtracker.
    pub fallbacks: u64,
}

impl Slots {
    fn cache_index(&mut self, id: usize) -> usize {
        match self.caches.iter().position(|c| c.id == id) {
            Some(p) => p,
            None => {
                self.caches.push(SpanCache {
                    id,
                    ..SpanCache::default()
                });
                self.caches.len() - 1
            }
        }
    }

    fn dfa_cache(
        &mut self,
        id: usize,
        dfa: &regex_automata::hybrid::dfa::DFA,
    ) -> &mut regex_automata::hybrid::dfa::Cache {
        let pos = match self.dfas.iter().position(|(i, _)| *i == id) {
            Some(p) => p,
            None => {
                self.dfas.push((id, dfa.create_cache()));
                self.dfas.len() - 1
            }
        };
        &mut self.dfas[pos].1
    }

    /// Index in `locs` of the capture buffer of pattern `id`.
    fn locations(&mut self, id: usize, re: &regex::Regex) -> usize {
        match self.locs.iter().position(|(i, _)| *i == id) {
            Some(p) => p,
            None => {
                self.locs.push((id, re.capture_locations()));
                self.locs.len() - 1
            }
        }
    }

    pub fn get(&self, group: usize) -> Option<(usize, usize)> {
        self.spans.get(group).copied().flatten()
    }
    /// The group spans, for a matcher outside this module that finds them
    /// itself (see `date::SyslogStart`).
    pub(crate) fn spans_mut(&mut self) -> &mut Vec<Option<(usize, usize)>> {
        &mut self.spans
    }
    pub fn text<'h>(&self, hay: &'h str, group: usize) -> Option<&'h str> {
        self.get(group).map(|(s, e)| &hay[s..e])
    }
}

/// A `regex`-crate pattern, plus an ASCII-only build of it used when the
/// haystack is ASCII: on ASCII text both match exactly alike (Unicode
/// classes and case folding differ only on non-ASCII characters), and the
/// ASCII automata are several times smaller and faster.
///
/// The Unicode build is made when a haystack first needs it (at once if
/// there is no ASCII build): most logs are all ASCII, and the Unicode
/// automata took most of a filter's compile time, which every
/// `banhammer regex` and `test-filter` run pays before its first line.
/// Whether it can be made is checked at once, by parsing the pattern as
/// it would parse it; what is left is the size limit, which a pattern
/// whose ASCII build fits could exceed only with huge repetitions of
/// Unicode classes: then it is logged once and the pattern matches no
/// non-ASCII haystack (the ASCII build could split a character there).
#[derive(Debug)]
struct FastRegex {
    /// The `regex`-crate pattern both builds are made from.
    pattern: Box<str>,
    /// The pattern as the filter wrote it (for messages).
    source: Box<str>,
    uni: OnceLock<Option<regex::Regex>>,
    ascii: Option<regex::bytes::Regex>,
    /// The byte classes of the ASCII build: bytes in one class are never
    /// told apart by the pattern (see [`ShapeCache`]).
    classes: Option<Box<[u8; 256]>>,
    /// Shape key: the match and its surroundings instead of the haystack
    /// from the start (else chosen per cache, see [`SpanCache::by_match`]).
    shape_by_match: bool,
    /// For a pattern whose every match starts at the haystack's start: the
    /// lazy DFA of the ASCII build, searched anchored with a cache of its
    /// own in [`Slots`] (a match's end without the general search's
    /// set-up: no cache pool, no strategy, no reverse search).
    anchored: Option<regex_automata::hybrid::dfa::DFA>,
}

/// One of a [`FastRegex`]'s two builds.
enum Build<'r> {
    Ascii(&'r regex::bytes::Regex),
    Unicode(&'r regex::Regex),
}

impl FastRegex {
    fn new(pattern: &str, src: &str) -> Result<FastRegex, PatternError> {
        let ascii = regex::bytes::RegexBuilder::new(pattern)
            .unicode(false)
            .size_limit(64 << 20)
            .dfa_size_limit(16 << 20)
            .build()
            .ok();
        let nfa = ascii.as_ref().and_then(|_| ascii_nfa(pattern));
        let classes = nfa.as_ref().map(classes_of);
        let anchored = nfa.filter(|_| starts_at_start(pattern)).and_then(|nfa| {
            regex_automata::hybrid::dfa::DFA::builder()
                .configure(regex_automata::hybrid::dfa::DFA::config().cache_capacity(16 << 20))
                .build_from_nfa(nfa)
                .ok()
        });
        let uni = OnceLock::new();
        if ascii.is_some() {
            regex_syntax::ParserBuilder::new()
                .build()
                .parse(pattern)
                .map_err(|e| PatternError::Compile {
                    pattern: src.to_string(),
                    msg: e.to_string(),
                })?;
        } else {
            let _ = uni.set(Some(build_std(pattern, src)?));
        }
        Ok(FastRegex {
            pattern: pattern.into(),
            source: src.into(),
            uni,
            ascii,
            classes,
            shape_by_match: false,
            anchored,
        })
    }

    /// [`find_at`](Self::find_at) through the anchored DFA where there is one.
    fn find_at_with(
        &self,
        id: usize,
        hay: &str,
        start: usize,
        slots: &mut Slots,
    ) -> Option<(usize, usize)> {
        if let Some(dfa) = &self.anchored {
            if start == 0 && hay.is_ascii() {
                let cache = slots.dfa_cache(id, dfa);
                let input = regex_automata::Input::new(hay.as_bytes())
                    .anchored(regex_automata::Anchored::Yes);
                // an error (the cache thrashed): the general search decides
                if let Ok(found) = dfa.try_search_fwd(cache, &input) {
                    return found.map(|m| (0, m.offset()));
                }
            }
        }
        self.find_at(hay, start)
    }

    /// The Unicode build (made now if not yet), or `None` if it cannot be
    /// made (see [`FastRegex`]).
    fn unicode(&self) -> Option<&regex::Regex> {
        self.uni
            .get_or_init(|| match build_std(&self.pattern, &self.source) {
                Ok(r) => Some(r),
                Err(e) => {
                    tracing::error!(
                        "pattern {} cannot run on non-ASCII text ({e}): it matches no line that is not ASCII",
                        self.source
                    );
                    None
                }
            })
            .as_ref()
    }

    /// The build that searches `hay`: the ASCII one for ASCII text, else
    /// the Unicode one; `None` (no match) if that cannot be made.
    fn build_for(&self, hay: &str) -> Option<Build<'_>> {
        match &self.ascii {
            Some(a) if hay.is_ascii() => Some(Build::Ascii(a)),
            _ => self.unicode().map(Build::Unicode),
        }
    }

    fn is_match_at(&self, hay: &str, start: usize) -> bool {
        match self.build_for(hay) {
            Some(Build::Ascii(a)) => a.is_match_at(hay.as_bytes(), start),
            Some(Build::Unicode(u)) => u.is_match_at(hay, start),
            None => false,
        }
    }

    fn find_at(&self, hay: &str, start: usize) -> Option<(usize, usize)> {
        match self.build_for(hay)? {
            Build::Ascii(a) => a
                .find_at(hay.as_bytes(), start)
                .map(|m| (m.start(), m.end())),
            Build::Unicode(u) => u.find_at(hay, start).map(|m| (m.start(), m.end())),
        }
    }

    /// Fills `slots.raw` with the spans of every group; false if no match.
    ///
    /// The groups of a match depend only on the matched text and the one
    /// character on each side of it (all assertions of these patterns look
    /// at no more), so a pattern that keeps matching the same text (a
    /// timestamp shared by consecutive lines, the same syslog prefix) gets
    /// its groups from the last match instead of the capture engine. The
    /// cache switches itself off for patterns where it rarely hits.
    fn captures_at(&self, id: usize, hay: &str, start: usize, slots: &mut Slots) -> bool {
        slots.raw.clear();
        let ci = slots.cache_index(id);
        if let Some(classes) = &self.classes {
            if slots.caches[ci].shape.enabled() && hay.is_ascii() {
                return self.shaped_captures(classes, ci, id, hay, start, slots);
            }
        }
        if slots.caches[ci].enabled() {
            let Some((ms, me)) = self.find_at_with(id, hay, start, slots) else {
                return false;
            };
            let key = SpanKey::of(hay, ms, me);
            if slots.caches[ci].lookup(&key, hay, ms, me) {
                let c = &slots.caches[ci];
                slots
                    .raw
                    .extend(c.rel.iter().map(|r| r.map(|(a, b)| (a + ms, b + ms))));
                return true;
            }
            if !self.engine_captures(id, hay, ms, slots) {
                return false;
            }
            let raw = std::mem::take(&mut slots.raw);
            slots.caches[ci].store(key, hay, ms, me, &raw);
            slots.raw = raw;
            return true;
        }
        self.engine_captures(id, hay, start, slots)
    }

    /// `captures_at` through the [`ShapeCache`] (ASCII haystacks).
    fn shaped_captures(
        &self,
        classes: &[u8; 256],
        ci: usize,
        id: usize,
        hay: &str,
        start: usize,
        slots: &mut Slots,
    ) -> bool {
        let bytes = hay.as_bytes();
        let by_match = self.shape_by_match || slots.caches[ci].by_match;
        let (text, extra, base) = if by_match {
            let Some((ms, me)) = self.find_at_with(id, hay, start, slots) else {
                return false;
            };
            let class = |b: Option<&u8>| b.map_or(SHAPE_EDGE, |&b| u64::from(classes[b as usize]));
            let around =
                class(ms.checked_sub(1).and_then(|i| bytes.get(i))) << 9 | class(bytes.get(me));
            (&bytes[ms..me], around, ms)
        } else {
            (bytes, start as u64, 0)
        };
        let cache = &mut slots.caches[ci];
        if let Some(found) = cache.shape.lookup(classes, text, extra) {
            if found {
                cache.shape.hit_spans(base, &mut slots.raw);
            }
            return found;
        }
        let found = self.engine_captures(id, hay, if by_match { base } else { start }, slots);
        let raw = std::mem::take(&mut slots.raw);
        let cache = &mut slots.caches[ci];
        cache.shape.store(found, &raw, base);
        if !by_match {
            // after the store: a switch empties the shapes
            let spanning = found
                && raw
                    .first()
                    .copied()
                    .flatten()
                    .is_some_and(|(_, e)| e + 1 >= hay.len());
            cache.count_whole_miss(spanning);
        }
        slots.raw = raw;
        found
    }

    fn engine_captures(&self, id: usize, hay: &str, start: usize, slots: &mut Slots) -> bool {
        slots.raw.clear();
        let Some(build) = self.build_for(hay) else {
            return false;
        };
        match build {
            Build::Ascii(a) => {
                let pos = match slots.blocs.iter().position(|(i, _)| *i == id) {
                    Some(p) => p,
                    None => {
                        slots.blocs.push((id, a.capture_locations()));
                        slots.blocs.len() - 1
                    }
                };
                let locs = &mut slots.blocs[pos].1;
                if a.captures_read_at(locs, hay.as_bytes(), start).is_none() {
                    return false;
                }
                slots.raw.extend((0..locs.len()).map(|i| locs.get(i)));
            }
            Build::Unicode(u) => {
                let pos = slots.locations(id, u);
                let locs = &mut slots.locs[pos].1;
                if u.captures_read_at(locs, hay, start).is_none() {
                    return false;
                }
                slots.raw.extend((0..locs.len()).map(|i| locs.get(i)));
            }
        }
        true
    }
}

/// The context that decides the groups of a match: the text and the
/// characters around it (`None` at the ends of the haystack).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct SpanKey {
    before: Option<char>,
    after: Option<char>,
    len: usize,
}

impl SpanKey {
    fn of(hay: &str, s: usize, e: usize) -> SpanKey {
        SpanKey {
            before: hay[..s].chars().next_back(),
            after: hay[e..].chars().next(),
            len: e - s,
        }
    }
}

/// One remembered match of one pattern.
#[derive(Debug, Default)]
struct SpanCache {
    id: usize,
    shape: ShapeCache,
    key: SpanKey,
    text: String,
    /// Group spans relative to the match start.
    rel: Vec<Option<(usize, usize)>>,
    valid: bool,
    lookups: u32,
    hits: u32,
    off: bool,
    /// Shapes keyed by the match instead of the whole haystack: chosen
    /// when whole haystacks repeat too seldom (a pattern that matches a
    /// part of the line, whose rest varies; one that mostly fails, where
    /// the DFA alone answers).
    by_match: bool,
    /// Whole-haystack misses counted, and how many of them were matches
    /// of (nearly) the whole haystack.
    whole_misses: u32,
    whole_spanning: u32,
}

/// Whole-haystack misses that decide [`SpanCache::by_match`].
const WHOLE_WINDOW: u32 = 256;

impl SpanCache {
    fn enabled(&self) -> bool {
        !self.off
    }

    /// Counts a whole-haystack miss (`spanning`: the pattern matched up
    /// to the haystack's last character). After [`WHOLE_WINDOW`] of them,
    /// switches to match keys for good unless most matched the whole
    /// haystack: for a pattern that mostly fails the DFA alone answers,
    /// and for one that matches a part of the line the rest of the line
    /// (which may vary freely) is no longer in the key.
    fn count_whole_miss(&mut self, spanning: bool) {
        if self.whole_misses >= WHOLE_WINDOW {
            return;
        }
        self.whole_misses += 1;
        self.whole_spanning += u32::from(spanning);
        if self.whole_misses == WHOLE_WINDOW && self.whole_spanning * 2 < WHOLE_WINDOW {
            self.by_match = true;
            // entries under the other key must not answer
            self.shape = ShapeCache::default();
        }
    }
    fn lookup(&mut self, key: &SpanKey, hay: &str, s: usize, e: usize) -> bool {
        self.lookups += 1;
        let hit = self.valid && self.key == *key && self.text == hay[s..e];
        if hit {
            self.hits += 1;
        } else if self.lookups >= 256 {
            // fewer than one hit in four: not worth the extra search
            self.off = self.hits * 4 < self.lookups;
            self.lookups = 0;
            self.hits = 0;
        }
        hit
    }
    fn store(
        &mut self,
        key: SpanKey,
        hay: &str,
        s: usize,
        e: usize,
        raw: &[Option<(usize, usize)>],
    ) {
        self.key = key;
        self.text.clear();
        self.text.push_str(&hay[s..e]);
        self.rel.clear();
        self.rel
            .extend(raw.iter().map(|r| r.map(|(a, b)| (a - s, b - s))));
        self.valid = true;
    }
}

/// The byte classes of `pattern` compiled as the ASCII build is: a table
/// from byte to class.
fn byte_classes(pattern: &str) -> Option<Box<[u8; 256]>> {
    ascii_nfa(pattern).as_ref().map(classes_of)
}

/// The NFA of `pattern` as the ASCII build compiles it.
fn ascii_nfa(pattern: &str) -> Option<regex_automata::nfa::thompson::NFA> {
    use regex_automata::{nfa::thompson, util::syntax};
    thompson::NFA::compiler()
        .syntax(syntax::Config::new().unicode(false).utf8(false))
        .configure(
            thompson::Config::new()
                .nfa_size_limit(Some(64 << 20))
                .shrink(false),
        )
        .build(pattern)
        .ok()
}

fn classes_of(nfa: &regex_automata::nfa::thompson::NFA) -> Box<[u8; 256]> {
    let bc = nfa.byte_classes();
    let mut table = Box::new([0u8; 256]);
    for (b, t) in table.iter_mut().enumerate() {
        *t = bc.get(b as u8);
    }
    table
}

/// Whether every match of `pattern` (as the ASCII build reads it) starts
/// at the start of the haystack (`^` without multi-line, on every branch).
fn starts_at_start(pattern: &str) -> bool {
    regex_syntax::ParserBuilder::new()
        .unicode(false)
        .utf8(false)
        .build()
        .parse(pattern)
        .is_ok_and(|h| {
            h.properties()
                .look_set_prefix()
                .contains(regex_syntax::hir::Look::Start)
        })
}

/// Results of one pattern by the *shape* of the text: the text with every
/// byte replaced by its byte class.
///
/// A pattern cannot tell apart two bytes of one class (no literal, class
/// or assertion of it contains one but not the other), so two haystacks of
/// the same shape, searched from the same offset, match alike: same
/// outcome, same group spans. Log lines of one kind differ mostly in bytes
/// of one class (the digits of an address or a port, the letters of a user
/// name that the pattern does not spell), so their shapes repeat and the
/// capture engine runs once per shape.
///
/// Two keys: the whole haystack (no search at all on a hit; right for
/// patterns that span the line), or, for patterns that match a part of it
/// (a line's prefix), the shape of the match found by the DFA and the
/// classes of the bytes around it, which is all the groups depend on. The
/// cache switches itself off for patterns where it rarely hits.
///
/// Entries live in two generations, each an arena of bytes (one
/// allocation, no pointer per entry) indexed by the key's hash: when the
/// young one is full it becomes the old one and the old one is dropped, so
/// shapes in steady use survive (an entry found in the old generation is
/// copied to the young one) while memory stays bounded.
#[derive(Debug, Default)]
struct ShapeCache {
    young: ShapeArena,
    old: ShapeArena,
    /// The key being looked up; the key of the next `store`.
    scratch: Vec<u8>,
    extra: u64,
    hash: u64,
    /// Where the entry of the last hit starts in `young`.
    last: usize,
    lookups: u32,
    hits: u32,
    off: bool,
}

/// One generation: entries back to back in `bytes`, found by `index`
/// (key hash -> offset). An entry is a [`ShapeHeader`] (`SHAPE_HEADER`
/// bytes), its group spans relative to the start of the shaped text (two
/// `u16` each; `u16::MAX` for a group that did not take part), then the
/// shape.
#[derive(Debug, Default)]
struct ShapeArena {
    index: std::collections::HashMap<u64, u32, BuildIdentity>,
    bytes: Vec<u8>,
}

/// extra (8 bytes), shape length (4), number of spans (2), found (1), pad (1).
const SHAPE_HEADER: usize = 16;
/// Arena bytes per generation (a shape of a log line with its groups takes
/// about 100 to 150).
const SHAPE_ARENA_BYTES: usize = 1 << 20;
/// Lookups per hit-rate check.
const SHAPE_WINDOW: u32 = 8192;
/// `extra` for a text with no byte before or after it.
const SHAPE_EDGE: u64 = 0x100;

struct ShapeHeader {
    extra: u64,
    len: usize,
    spans: usize,
    found: bool,
}

impl ShapeArena {
    fn header(&self, at: usize) -> ShapeHeader {
        let b = &self.bytes[at..at + SHAPE_HEADER];
        let mut extra = [0u8; 8];
        extra.copy_from_slice(&b[..8]);
        ShapeHeader {
            extra: u64::from_le_bytes(extra),
            len: u32::from_le_bytes([b[8], b[9], b[10], b[11]]) as usize,
            spans: usize::from(u16::from_le_bytes([b[12], b[13]])),
            found: b[14] != 0,
        }
    }

    /// The entry for `hash` if it is exactly (`shape`, `extra`): its offset
    /// and `found`.
    fn find(&self, hash: u64, shape: &[u8], extra: u64) -> Option<(usize, bool)> {
        let at = *self.index.get(&hash)? as usize;
        let h = self.header(at);
        let text = at + SHAPE_HEADER + 4 * h.spans;
        (h.extra == extra && h.len == shape.len() && self.bytes[text..text + h.len] == *shape)
            .then_some((at, h.found))
    }

    /// The whole entry at `at` (to copy it into another generation).
    fn entry(&self, at: usize) -> &[u8] {
        let h = self.header(at);
        &self.bytes[at..at + SHAPE_HEADER + 4 * h.spans + h.len]
    }

    fn push(&mut self, hash: u64, entry: &[u8]) -> Option<usize> {
        let at = self.bytes.len();
        let at32 = u32::try_from(at).ok()?;
        self.bytes.extend_from_slice(entry);
        self.index.insert(hash, at32);
        Some(at)
    }

    fn full(&self) -> bool {
        self.bytes.len() >= SHAPE_ARENA_BYTES
    }
}

impl ShapeCache {
    fn enabled(&self) -> bool {
        !self.off
    }

    /// Looks up the shape of `text` with `extra` (the search offset, or the
    /// classes around a match); Some(found) on a hit.
    fn lookup(&mut self, classes: &[u8; 256], text: &[u8], extra: u64) -> Option<bool> {
        self.scratch.clear();
        self.scratch
            .extend(text.iter().map(|&b| classes[b as usize]));
        self.extra = extra;
        self.hash = shape_hash(&self.scratch, extra);
        self.lookups += 1;
        let mut hit = self.young.find(self.hash, &self.scratch, extra);
        if hit.is_none() {
            if let Some((at, found)) = self.old.find(self.hash, &self.scratch, extra) {
                // still in use: keep it in the young generation (copied
                // first: making room may drop the old generation)
                let entry = self.old.entry(at).to_vec();
                self.make_room();
                hit = self.young.push(self.hash, &entry).map(|at| (at, found));
            }
        }
        if let Some((at, _)) = hit {
            self.hits += 1;
            self.last = at;
        }
        if self.lookups >= SHAPE_WINDOW {
            // fewer than one hit in eight: the shapes do not repeat enough
            self.off = self.hits * 8 < self.lookups;
            self.lookups = 0;
            self.hits = 0;
            if self.off {
                self.young = ShapeArena::default();
                self.old = ShapeArena::default();
                // a hit's entry went with the arenas: the caller searches
                return None;
            }
        }
        hit.map(|(_, found)| found)
    }

    /// Starts a new young generation if the current one is full.
    fn make_room(&mut self) {
        if self.young.full() {
            self.old = std::mem::take(&mut self.young);
            // about as many entries again; no growing on the way
            self.young
                .bytes
                .reserve(SHAPE_ARENA_BYTES + SHAPE_ARENA_BYTES / 8);
            self.young.index.reserve(self.old.index.len());
        }
    }

    /// The spans of the last hit, moved to `base`.
    fn hit_spans(&self, base: usize, out: &mut Vec<Option<(usize, usize)>>) {
        let at = self.last;
        let h = self.young.header(at);
        let spans = &self.young.bytes[at + SHAPE_HEADER..at + SHAPE_HEADER + 4 * h.spans];
        out.extend(spans.chunks_exact(4).map(|c| {
            let a = u16::from_le_bytes([c[0], c[1]]);
            let b = u16::from_le_bytes([c[2], c[3]]);
            (a != u16::MAX).then(|| (usize::from(a) + base, usize::from(b) + base))
        }));
    }

    /// Remembers the outcome for the key of the last (missed) lookup; the
    /// spans are moved from `base`. Matches too long for the arena's
    /// 16-bit offsets are not remembered.
    fn store(&mut self, found: bool, spans: &[Option<(usize, usize)>], base: usize) {
        if self.off {
            return;
        }
        let (Ok(len), Ok(n)) = (
            u32::try_from(self.scratch.len()),
            u16::try_from(spans.len()),
        ) else {
            return;
        };
        let mut entry = Vec::with_capacity(SHAPE_HEADER + 4 * spans.len() + self.scratch.len());
        entry.extend_from_slice(&self.extra.to_le_bytes());
        entry.extend_from_slice(&len.to_le_bytes());
        entry.extend_from_slice(&n.to_le_bytes());
        entry.extend_from_slice(&[u8::from(found), 0]);
        for s in spans {
            let (a, b) = match *s {
                None => (u16::MAX, u16::MAX),
                Some((a, b)) => {
                    let rel = |x: usize| {
                        x.checked_sub(base)
                            .and_then(|r| u16::try_from(r).ok())
                            .filter(|&r| r != u16::MAX)
                    };
                    match (rel(a), rel(b)) {
                        (Some(a), Some(b)) => (a, b),
                        _ => return,
                    }
                }
            };
            entry.extend_from_slice(&a.to_le_bytes());
            entry.extend_from_slice(&b.to_le_bytes());
        }
        entry.extend_from_slice(&self.scratch);
        self.make_room();
        self.young.push(self.hash, &entry);
    }
}

fn shape_hash(shape: &[u8], extra: u64) -> u64 {
    const K: u64 = 0x517c_c1b7_2722_0a95;
    let mut h = extra.wrapping_mul(K);
    let mut chunks = shape.chunks_exact(8);
    for c in &mut chunks {
        let w = u64::from_le_bytes(c.try_into().unwrap_or_default());
        h = (h.rotate_left(5) ^ w).wrapping_mul(K);
    }
    for &b in chunks.remainder() {
        h = (h.rotate_left(5) ^ u64::from(b)).wrapping_mul(K);
    }
    h ^ (shape.len() as u64)
}

/// A hasher for keys that are hashes already.
#[derive(Debug, Default, Clone, Copy)]
struct BuildIdentity;

impl std::hash::BuildHasher for BuildIdentity {
    type Hasher = IdentityHasher;
    fn build_hasher(&self) -> IdentityHasher {
        IdentityHasher(0)
    }
}

struct IdentityHasher(u64);

impl std::hash::Hasher for IdentityHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8) | u64::from(b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

fn build_std(pattern: &str, src: &str) -> Result<regex::Regex, PatternError> {
    regex::RegexBuilder::new(pattern)
        .size_limit(64 << 20)
        .dfa_size_limit(16 << 20)
        .build()
        .map_err(|e| PatternError::Compile {
            pattern: src.to_string(),
            msg: e.to_string(),
        })
}

impl Pattern {
    /// Compiles a Python pattern; `multiline` is Python's `re.M`.
    pub fn new(src: &str, multiline: bool) -> Result<Pattern, PatternError> {
        let py = PyPattern::parse(src)?;
        let engine = if py.needs_fancy() {
            let fancy_src = py.emit(Target::Fancy, multiline);
            let exact = Box::new(
                fancy_regex::RegexBuilder::new(&fancy_src)
                    .backtrack_limit(BACKTRACK_LIMIT)
                    .build()
                    .map_err(|e| PatternError::Compile {
                        pattern: src.to_string(),
                        msg: e.to_string(),
                    })?,
            );
            let eliminated = py.eliminated();
            let root = eliminated.clone().unwrap_or_else(|| py.root.clone());
            match VerifiedCore::new(&py, &root, multiline, src)? {
                Some(core) => {
                    let splits = eliminated
                        .and_then(|r| Splits::new(&py, r, multiline, src))
                        .map(Box::new);
                    Engine::Verified {
                        outer: Outer::new(&core, splits.as_deref()),
                        core: Arc::new(core),
                        splits,
                        exact,
                    }
                }
                None => Engine::Fancy {
                    exact,
                    approx: FastRegex::new(&py.emit(Target::Approx, multiline), src)?,
                },
            }
        } else {
            Engine::Std(FastRegex::new(&py.emit(Target::Std, multiline), src)?)
        };
        let next_id = next_pattern_id;
        let tail = match py.split_tail(multiline) {
            Some((head, group, needs_char)) => Some(TailGroup {
                head: FastRegex {
                    // a line's prefix: key the cache by the prefix alone
                    shape_by_match: true,
                    ..FastRegex::new(&head.emit(Target::Std, false), src)?
                },
                head_id: next_id(),
                group,
                needs_char,
            }),
            None => None,
        };
        Ok(Pattern {
            id: next_id(),
            tail,
            source: src.to_string(),
            engine,
            names: py.names,
        })
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    /// Which engine runs `hay`, and how long its parts take (debugging).
    pub fn debug_engine(&self, hay: &str) -> String {
        match &self.engine {
            Engine::Verified {
                core,
                splits: Some(sp),
                ..
            } => {
                let t = std::time::Instant::now();
                let mut c = None;
                for _ in 0..10000 {
                    c = Some(sp.select(hay, core));
                }
                let sel = t.elapsed() / 10000;
                let c = c.unwrap();
                format!(
                    "select {sel:?}, variant is full: {}, tests {}, regex len {}",
                    Arc::ptr_eq(&c, core),
                    sp.tests.len(),
                    c.approx.pattern.len()
                )
            }
            Engine::Verified { .. } => "verified without splits".into(),
            Engine::Std(_) => "std".into(),
            Engine::Fancy { .. } => "fancy".into(),
        }
    }

    /// True if the backtracking engine is in use.
    pub fn is_fancy(&self) -> bool {
        !matches!(self.engine, Engine::Std(_))
    }

    /// True if the backtracking engine runs on every candidate (look-around
    /// or back-references the fast path cannot check).
    pub fn is_backtracking_only(&self) -> bool {
        matches!(self.engine, Engine::Fancy { .. })
    }

    /// The `regex`-crate pattern used (exact, or the over-approximation).
    pub fn std_pattern(&self) -> &str {
        match &self.engine {
            Engine::Std(r) => &r.pattern,
            Engine::Fancy { approx, .. } => &approx.pattern,
            Engine::Verified { core, .. } => &core.approx.pattern,
        }
    }

    /// Group names by group number (index 0 is the whole match).
    pub fn names(&self) -> &[Option<String>] {
        &self.names
    }

    pub fn group_index(&self, name: &str) -> Option<usize> {
        self.names.iter().position(|n| n.as_deref() == Some(name))
    }

    pub fn group_count(&self) -> usize {
        self.names.len()
    }

    pub fn is_match(&self, hay: &str) -> bool {
        match &self.engine {
            Engine::Std(r) => r.is_match_at(hay, 0),
            Engine::Fancy { exact, approx } => {
                approx.is_match_at(hay, 0) && exact.is_match(hay).unwrap_or(false)
            }
            Engine::Verified { exact, core, .. } => {
                core.approx.is_match_at(hay, 0) && exact.is_match(hay).unwrap_or(false)
            }
        }
    }

    /// Python's `search(hay, start)`: fills `slots`; false if no match (or
    /// if the backtracking engine gave up: see [`BACKTRACK_LIMIT`]).
    pub fn search_at(&self, hay: &str, start: usize, slots: &mut Slots) -> bool {
        slots.spans.clear();
        if let Some(t) = &self.tail {
            // valid when the haystack is one line: no `\n` but a final one
            let nl = memchr::memchr(b'\n', hay.as_bytes());
            if nl.is_none_or(|p| p + 1 == hay.len()) {
                if !t.head.captures_at(t.head_id, hay, start, slots) {
                    return false;
                }
                let line_end = nl.unwrap_or(hay.len());
                let Some((ms, me)) = slots.raw.first().copied().flatten() else {
                    return false;
                };
                let content_start = if t.needs_char {
                    me - hay[..me].chars().next_back().map_or(0, char::len_utf8)
                } else {
                    me
                };
                slots.spans.push(Some((ms, line_end)));
                let raw = &slots.raw;
                slots
                    .spans
                    .extend((1..t.group).map(|i| raw.get(i).copied().flatten()));
                slots.spans.push(Some((content_start, line_end)));
                return true;
            }
        }
        match &self.engine {
            Engine::Std(r) => {
                if !r.captures_at(self.id, hay, start, slots) {
                    return false;
                }
                let n = self.names.len();
                slots.spans.extend(slots.raw.iter().take(n));
                true
            }
            Engine::Fancy { exact, approx } => {
                if !approx.is_match_at(hay, start) {
                    return false;
                }
                self.backtrack(exact, hay, start, slots)
            }
            Engine::Verified {
                core,
                splits,
                exact,
                outer,
            } => {
                let outer = outer.as_ref().filter(|_| hay.is_ascii());
                let mut cache = None;
                if let Some(o) = outer {
                    let ci = slots.cache_index(o.id);
                    let shapes = &mut slots.caches[ci].shape;
                    if shapes.enabled() {
                        if let Some(found) = shapes.lookup(&o.classes, hay.as_bytes(), start as u64)
                        {
                            if found {
                                shapes.hit_spans(0, &mut slots.spans);
                            }
                            return found;
                        }
                        cache = Some(ci);
                    }
                }
                let chosen;
                let core = match splits {
                    Some(sp) if start == 0 => {
                        chosen = sp.select(hay, core);
                        &chosen
                    }
                    _ => core,
                };
                if let Some(found) = core.search(hay, start, self.names.len(), slots) {
                    if let (Some(ci), Some(o)) = (cache, outer) {
                        if core.fits(&o.classes) {
                            slots.caches[ci].shape.store(found, &slots.spans, 0);
                        }
                    }
                    return found;
                }
                slots.fallbacks += 1;
                self.backtrack(exact, hay, start, slots)
            }
        }
    }

    fn backtrack(
        &self,
        exact: &fancy_regex::Regex,
        hay: &str,
        start: usize,
        slots: &mut Slots,
    ) -> bool {
        slots.spans.clear();
        match exact.captures_from_pos(hay, start) {
            Ok(Some(caps)) => {
                for i in 0..self.names.len() {
                    slots.spans.push(caps.get(i).map(|m| (m.start(), m.end())));
                }
                true
            }
            Ok(None) => false,
            Err(_) => {
                slots.backtrack_limit_hits += 1;
                false
            }
        }
    }

    pub fn search(&self, hay: &str, slots: &mut Slots) -> bool {
        self.search_at(hay, 0, slots)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn find(p: &str, hay: &str) -> Option<Vec<Option<String>>> {
        let pat = Pattern::new(p, false).unwrap_or_else(|e| panic!("{e}"));
        let mut s = Slots::default();
        pat.search(hay, &mut s).then(|| {
            (0..pat.group_count())
                .map(|i| s.text(hay, i).map(String::from))
                .collect()
        })
    }

    #[test]
    fn python_dollar_matches_before_final_newline() {
        assert!(find(r"^abc$", "abc\n").is_some());
        assert!(find(r"abc\s+$", "abc\n").is_some());
        assert!(find(r"^abc\Z", "abc\n").is_none());
        assert!(find(r"^abc\n\Z", "abc\n").is_some());
    }

    #[test]
    fn literal_braces_and_escapes() {
        assert!(find(r"a{b}", "a{b}").is_some());
        assert!(find(r"x{,2}y", "xxy").is_some());
        assert!(find(r"\<tag\>", "<tag>").is_some());
        assert!(find(r"[\w\-.^_]+", "a-b.c^d").unwrap()[0].as_deref() == Some("a-b.c^d"));
        assert!(find(r"[]a]+", "]a]").is_some());
        assert!(find(r"[[]", "[").is_some());
        assert!(find(r"a&&b~~c", "a&&b~~c").is_some());
        assert!(find(r"[&&~]+", "&~").is_some());
        assert!(find(r"\x41\u0042\103", "ABC").is_some());
    }

    #[test]
    fn groups_keep_python_numbers() {
        let g = find(r"(?P<a>x)(y)(?:z)(?P<b>w)?", "xyz").unwrap();
        assert_eq!(
            g,
            [Some("xyz".into()), Some("x".into()), Some("y".into()), None]
        );
    }

    #[test]
    fn fancy_features_fall_back() {
        let p = Pattern::new(r"^(?P<q>[-/])a(?P=q)b$", false).unwrap();
        assert!(p.is_fancy());
        assert!(p.is_match("-a-b\n"));
        assert!(!p.is_match("-a/b\n"));
        let cond = r"^(?P<inv>invalid user )?(?P<user>(?(inv)\S+|[^:]+)) from (?!x)\S+";
        let g = find(cond, "invalid user bob from 1.2.3.4").unwrap();
        assert_eq!(g[2].as_deref(), Some("bob"));
        assert!(find(r"^(?:(?! from ).)*? end", "a from b end").is_none());
        assert!(find(r"^(?:(?! from ).)*? end", "a b end").is_some());
    }

    #[test]
    fn word_edge_lookaheads_stay_on_the_fast_engine() {
        let p = Pattern::new(r"(?=^|\b|\W)(\d+)(?=\b|\W|$)", false).unwrap();
        assert!(!p.is_fancy());
        let mut s = Slots::default();
        assert!(p.search("ab 12 cd", &mut s));
        assert_eq!(s.get(1), Some((3, 5)));
        assert!(!p.search("ab12cd", &mut s) || s.get(1) != Some((2, 4)));
    }

    #[test]
    fn flags() {
        assert!(find(r"(?i)abc", "ABC").is_some());
        assert!(find(r"x(?i)abc", "xABC").is_some());
        assert!(find(r"(?i:a)b", "Ab").is_some());
        assert!(find(r"(?i:a)b", "AB").is_none());
        assert!(find(&glob_to_local_flags(r"((?i)a)b"), "Ab").is_some());
        assert_eq!(glob_to_local_flags(r"x(?:(?i)a)b"), r"x(?i:a)b");
        assert!(find("(?x) a b # comment\n c", "abc").is_some());
    }

    /// Every fast path (verified look-around, compiled-away conditionals,
    /// branch pruning, span cache, prefix-only tails, ASCII automata) must
    /// give exactly what the backtracking engine gives.
    #[test]
    fn fast_paths_agree_with_the_backtracking_engine() {
        // (pattern, slots of the texts to try: one option of each, in order)
        let cases: [(&str, &[&[&str]]); 8] = [
            (
                r"^Bad (?:(?P<nf>key)|\S+) by (?P<inv>unknown )?(?P<who>(?P<plain>\S+)|(?(inv)(?:(?! by ).)*?|[^:]+)) by (?P<ip>\d+\.\d+\.\d+\.\d+)(?: port \d+)?(?(plain): |(?:(?:(?! by ).)*)$)",
                &[
                    &["Bad "],
                    &["key ", "pass ", "x "],
                    &["by "],
                    &["", "unknown "],
                    &["root", "a:b", "x by y", "r t", "é"],
                    &[" by "],
                    &["10.0.0.1", "1.2.3.4"],
                    &["", " port 22"],
                    &["", ": z", " ssh2", " by q", ":"],
                ],
            ),
            (
                r"^(?P<pre>\S+ \w+\[\d+\]: )(?:(?:err|warn): )?(?P<content>.+)$",
                &[
                    &["host sshd[12]: ", "h x[1]: ", "bad "],
                    &["", "err: ", "warn: "],
                    &["", "msg", "é tail", " "],
                ],
            ),
            (
                r"^(?P<pre>\S+ )?(?P<content>.*)$",
                &[&["", "host ", "a b "], &["", "rest", "é"]],
            ),
            (
                r"(?P<q>[-/.])x(?P=q)y",
                &[
                    &["", "a"],
                    &["-", "/", "."],
                    &["x"],
                    &["-", "/", "."],
                    &["y", "z"],
                ],
            ),
            (
                r"\b(?!key)\S+ by (?P<ip>\S+)",
                &[
                    &["", "a "],
                    &["key", "kez", "keys", "xkey"],
                    &[" by "],
                    &["1.2.3.4", ""],
                ],
            ),
            (
                r"(?<=\[)\d+(?=\])",
                &[&["", "x", "["], &["[", ""], &["42", "7"], &["]", "", ")"]],
            ),
            (
                r"(?i)^bad (?P<u>.*?) by (?P<ip>[\d.]+)\s*$",
                &[
                    &["bad ", "BAD ", "Bad"],
                    &["u", "", "u by v"],
                    &[" by "],
                    &["1.2.3.4"],
                    &["", " ", "x"],
                ],
            ),
            (
                r"(?=^|\b|\W)(?P<d>\d{2})(?=\b|\W|$)",
                &[
                    &["", "a", " ", "é"],
                    &["12", "123", "1"],
                    &["", "b", " ", "é"],
                ],
            ),
        ];
        let mut seed: u64 = 0x9e3779b97f4a7c15;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let mut outer_hits = 0;
        for (p, slots_of) in cases {
            let fast = Pattern::new(p, false).unwrap();
            let py = PyPattern::parse(p).unwrap();
            let slow = fancy_regex::Regex::new(&py.emit(Target::Fancy, false)).unwrap();
            let mut slots = Slots::default();
            let mut matched = 0;
            for _ in 0..3000 {
                let mut hay: String = slots_of
                    .iter()
                    .map(|opts| opts[(next() % opts.len() as u64) as usize])
                    .collect();
                if next() % 2 == 0 {
                    hay.push('\n');
                }
                let want = slow.captures(&hay).unwrap().map(|c| {
                    (0..py.names.len())
                        .map(|i| c.get(i).map(|m| (m.start(), m.end())))
                        .collect::<Vec<_>>()
                });
                let got = fast.search(&hay, &mut slots).then(|| {
                    (0..py.names.len())
                        .map(|i| slots.get(i))
                        .collect::<Vec<_>>()
                });
                matched += usize::from(want.is_some());
                assert_eq!(got, want, "pattern {p:?} on {hay:?}");
            }
            assert!(
                matched >= 10,
                "pattern {p:?} matched only {matched} of the generated texts"
            );
            if let Engine::Verified { outer: Some(o), .. } = &fast.engine {
                // answers came from the whole-haystack cache too
                outer_hits += slots
                    .caches
                    .iter()
                    .find(|c| c.id == o.id)
                    .map_or(0, |c| c.shape.hits);
            }
        }
        assert!(
            outer_hits > 100,
            "{outer_hits} answers from the outer cache"
        );
    }

    /// The Unicode build is made only when a non-ASCII haystack comes, and
    /// then matches as Unicode does; a pattern it could not parse fails at
    /// once; one too big for it still runs, on its ASCII build.
    #[test]
    fn the_unicode_build_is_made_when_first_needed() {
        let re = FastRegex::new(r"^\w+ (?P<x>\S+)$", "t").unwrap();
        assert_eq!(re.find_at("user bob", 0), Some((0, 8)));
        assert!(
            re.uni.get().is_none(),
            "an ASCII haystack needs no Unicode build"
        );
        assert_eq!(re.find_at("usér bob", 0), Some((0, 9)));
        assert!(re.uni.get().is_some_and(Option::is_some));
        let mut slots = Slots::default();
        assert!(re.engine_captures(0, "usér böb", 0, &mut slots));
        assert_eq!(slots.raw.get(1).copied().flatten(), Some((6, 10)));
        // valid for the byte-wise ASCII build, not for a str regex
        let err = FastRegex::new(r"(?-u:\xFF)", "t").map(|_| ()).unwrap_err();
        assert!(err.to_string().contains("UTF-8"), "{err}");
        // no ASCII build: the Unicode one is made (and checked) at once
        let uni_only = FastRegex::new(r"\p{Greek}+", "t").unwrap();
        assert!(uni_only.ascii.is_none() && uni_only.uni.get().is_some());
        assert_eq!(uni_only.find_at("abc αβγ", 0), Some((4, 10)));
        // too big as Unicode: logged; ASCII lines still match, others not
        let big = FastRegex::new(r"\w{5000}x|y", "t").unwrap();
        assert_eq!(big.find_at("a y", 0), Some((2, 3)));
        assert!(big.unicode().is_none());
        assert_eq!(big.find_at("é y", 0), None);
        assert!(!big.engine_captures(0, "é y", 0, &mut slots));
    }

    /// The anchored DFA finds the match the general search finds, and is
    /// made only for patterns whose matches all start at the start.
    #[test]
    fn the_anchored_dfa_finds_what_the_search_finds() {
        let anchored = [
            r"^(?:\S+\s+)?(?:(?:\[\d+\])?:\s+sshd(?:\[\d+\])?:?\s+)?.",
            r"^(?:a|ab)(?:c|bcd)?\b",
            r"^x*$",
        ];
        let hays = [
            "",
            "a",
            "ab",
            "abcd",
            "abc",
            "abx",
            "host sshd[12]: msg",
            " sshd: m",
            "x",
            "xxx",
            "xxxy",
            "é",
            "ab\n",
            "host: sshd[1] x",
        ];
        for p in anchored {
            let re = FastRegex::new(p, p).unwrap();
            assert!(re.anchored.is_some(), "{p}");
            let mut slots = Slots::default();
            for hay in hays {
                assert_eq!(
                    re.find_at_with(1, hay, 0, &mut slots),
                    re.find_at(hay, 0),
                    "{p:?} on {hay:?}"
                );
            }
        }
        for p in [r"a^|^b", r"(?m)^a", r"\bab", r"x*"] {
            assert!(FastRegex::new(p, p).unwrap().anchored.is_none(), "{p}");
        }
    }

    /// Entries survive the turnover of generations (those still looked up
    /// are carried over) and come back with their own outcome and spans.
    #[test]
    fn shape_cache_generations_keep_exact_entries() {
        let mut classes = [0u8; 256];
        for (i, c) in classes.iter_mut().enumerate() {
            *c = i as u8;
        }
        let spans = |i: usize| -> Vec<Option<(usize, usize)>> {
            vec![Some((10, 14 + i % 7)), None, Some((10 + i % 5, 11 + i % 5))]
        };
        let mut cache = ShapeCache::default();
        let mut flips = 0;
        for round in 0..6 {
            // texts seen every round, and texts seen in this round only
            for (steady, i) in
                (0..8_000).flat_map(|i| [(true, i), (false, 100_000 * (round + 1) + i)])
            {
                let text = format!("line {i:07} of a text");
                // each text twice: the cache must stay switched on
                for pass in 0..2 {
                    let before = cache.young.bytes.len();
                    match cache.lookup(&classes, text.as_bytes(), 7) {
                        Some(found) => {
                            assert_eq!(found, i % 3 != 0, "{i} round {round}");
                            let mut out = Vec::new();
                            if found {
                                cache.hit_spans(10, &mut out);
                                assert_eq!(out, spans(i), "{i} round {round}");
                            }
                        }
                        None => {
                            assert!(pass == 0 && (round == 0 || !steady), "{i} round {round}");
                            cache.store(i % 3 != 0, &spans(i), 10);
                        }
                    }
                    flips += usize::from(cache.young.bytes.len() < before);
                }
            }
        }
        assert!(cache.enabled());
        assert!(flips >= 2, "{flips}");
        // a different `extra` is a different key
        assert_eq!(
            cache.lookup(&classes, b"line 000001 of round-independent text", 8),
            None
        );
    }

    /// The lookup that ends a window with too few hits empties the cache:
    /// if it was a hit, it answers as a miss (its spans are gone).
    #[test]
    fn a_hit_that_switches_the_shape_cache_off_answers_as_a_miss() {
        let mut classes = [0u8; 256];
        for (i, c) in classes.iter_mut().enumerate() {
            *c = i as u8;
        }
        let mut cache = ShapeCache::default();
        for i in 0..SHAPE_WINDOW - 1 {
            let text = format!("text {i}");
            assert_eq!(cache.lookup(&classes, text.as_bytes(), 0), None, "{text}");
            cache.store(true, &[Some((0, 4))], 0);
        }
        assert!(cache.enabled());
        // seen before, but the window's one hit: too few, the cache goes off
        assert_eq!(cache.lookup(&classes, b"text 0", 0), None);
        assert!(!cache.enabled());
        assert_eq!(cache.lookup(&classes, b"text 0", 0), None);
    }

    #[test]
    fn a_pattern_matching_part_of_varying_lines_keys_its_shapes_by_the_match() {
        // matches the start of each line; the rest (a hash) never repeats
        let src = r"^Accepted (?P<m>\w+) for (?P<u>\S+) from (?P<ip>\d+\.\d+\.\d+\.\d+)(?:\s|$)";
        let p = Pattern::new(src, false).unwrap();
        let reference = regex::Regex::new(src).unwrap();
        let mut slots = Slots::default();
        let mut rng = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        for i in 0..3_000u64 {
            let r = next();
            let hay = match i % 4 {
                // not a match: the DFA answers alone once keyed by the match
                0 => format!("Accepted password from 10.0.{}.{} {r:x}\n", r % 7, i % 250),
                _ => format!(
                    "Accepted {} for {} from 10.{}.{}.{} port {} ssh2: SHA256:{r:016x}\n",
                    ["publickey", "password"][(r % 2) as usize],
                    ["root", "deploy", "a"][(i % 3) as usize],
                    r % 3,
                    i % 10,
                    (r >> 8) % 256,
                    r % 60_000,
                ),
            };
            let want = reference.captures(&hay).map(|c| {
                (0..c.len())
                    .map(|g| c.get(g).map(|m| (m.start(), m.end())))
                    .collect::<Vec<_>>()
            });
            let got = p.search(&hay, &mut slots).then(|| {
                (0..p.group_count())
                    .map(|g| slots.get(g))
                    .collect::<Vec<_>>()
            });
            assert_eq!(got, want, "line {i}: {hay}");
        }
        let cache = slots.caches.iter().find(|c| c.id == p.id).unwrap();
        assert!(cache.by_match, "shapes of whole lines that never repeat");
        assert!(cache.shape.enabled());
        // the match keys repeat: most matches came from the cache
        assert!(cache.shape.hits > 1_000, "{} hits", cache.shape.hits);
    }

    #[test]
    fn errors_are_reported_not_panics() {
        for bad in [
            r"(",
            r")",
            r"[a",
            r"a**",
            r"*a",
            r"\q",
            r"(?P<a>x)(?P<a>y)",
            r"a{3,2}",
            r"(?P=nope)",
        ] {
            assert!(Pattern::new(bad, false).is_err(), "{bad}");
        }
    }
}
