//! Tool-name patterns: `*` matches any run of characters, `?` exactly one,
//! everything else itself, character by character (no case folding, no
//! Unicode normalisation). A unit of its own, like ripgrep's globset: the
//! policy matches with it, `check-config` asks it which patterns shadow
//! which.

/// A tool-name pattern: `*` matches any run of characters, `?` exactly one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Glob {
    pattern: String,
    tokens: Vec<Token>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Token {
    Star,
    One,
    Char(char),
}

impl Glob {
    /// Compiles `pattern`; runs of `*` collapse to one.
    pub fn new(pattern: &str) -> Self {
        let mut tokens = Vec::new();
        for c in pattern.chars() {
            let t = match c {
                '*' => Token::Star,
                '?' => Token::One,
                c => Token::Char(c),
            };
            if !(t == Token::Star && tokens.last() == Some(&Token::Star)) {
                tokens.push(t);
            }
        }
        Self {
            pattern: pattern.to_owned(),
            tokens,
        }
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.pattern
    }

    /// Whether the pattern has no wildcard (it names one tool).
    pub fn is_exact(&self) -> bool {
        self.tokens.iter().all(|t| matches!(t, Token::Char(_)))
    }

    /// The order in which patterns are tried, most specific first: more
    /// literal characters, then fewer `*`, then the one sorting first. An
    /// exact name is tried before every glob by its callers.
    pub fn cmp_specificity(&self, other: &Glob) -> std::cmp::Ordering {
        (other.literal_count(), self.star_count(), self.as_str()).cmp(&(
            self.literal_count(),
            other.star_count(),
            other.as_str(),
        ))
    }

    fn literal_count(&self) -> usize {
        self.tokens
            .iter()
            .filter(|t| matches!(t, Token::Char(_)))
            .count()
    }

    fn star_count(&self) -> usize {
        self.tokens.iter().filter(|t| **t == Token::Star).count()
    }

    /// Whether `name` matches, character by character (the classic
    /// backtracking wildcard match: linear for one `*`, never worse than
    /// pattern length × name length).
    pub fn matches(&self, name: &str) -> bool {
        let name: Vec<char> = name.chars().collect();
        let (mut p, mut n) = (0, 0);
        let mut last_star: Option<(usize, usize)> = None;
        while n < name.len() {
            match self.tokens.get(p) {
                Some(Token::Star) => {
                    last_star = Some((p, n));
                    p += 1;
                }
                Some(Token::One) => (p, n) = (p + 1, n + 1),
                Some(Token::Char(c)) if *c == name[n] => (p, n) = (p + 1, n + 1),
                _ => match last_star {
                    Some((sp, sn)) => {
                        last_star = Some((sp, sn + 1));
                        (p, n) = (sp + 1, sn + 1);
                    }
                    None => return false,
                },
            }
        }
        self.tokens[p..].iter().all(|t| *t == Token::Star)
    }

    /// Whether every name `other` matches is also matched by `self`.
    pub fn covers(&self, other: &Glob) -> bool {
        covers(&self.tokens, &other.tokens)
    }
}

/// Whether pattern `p` matches every string described by `q`, treating `q`'s
/// wildcards as symbols: a `*` of `q` can only be absorbed by a `*` of `p`,
/// a `?` of `q` by a `?` or a `*` (used by `check-config` only).
fn covers(p: &[Token], q: &[Token]) -> bool {
    // reach[j]: p[..i] can match q[..j].
    let mut reach = vec![false; q.len() + 1];
    reach[0] = true;
    for pt in p {
        let mut next = vec![false; q.len() + 1];
        for j in 0..=q.len() {
            match pt {
                Token::Star => next[j] = reach[j] || (j > 0 && next[j - 1]),
                Token::One => {
                    next[j] =
                        j > 0 && reach[j - 1] && matches!(q[j - 1], Token::One | Token::Char(_))
                }
                Token::Char(c) => next[j] = j > 0 && reach[j - 1] && q[j - 1] == Token::Char(*c),
            }
        }
        reach = next;
    }
    reach[q.len()]
}
