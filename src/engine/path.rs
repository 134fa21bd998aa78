//! Dynamo namespace paths (SPEC section 2): parsing, canonical form, runtime token, label encoding.

use std::fmt;

/// The root of every path tree.
pub const ROOT: &str = "default";
/// Longest canonical path, in characters (the CRD's `maxLength`).
pub const MAX_LEN: usize = 63;
/// Most segments in a canonical path, the root included.
pub const MAX_SEGMENTS: usize = 8;
/// Separator of path segments inside a runtime token.
pub const TOKEN_SEPARATOR: &str = "--";

/// A well-formed path in canonical form: absolute from the root `default`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DynamoPath(String);

/// Why a value is not a path. `Display` names the offending part and shows a corrected example.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PathError {
    pub problem: PathProblem,
    /// A valid canonical path close to what was given, for the message.
    pub suggestion: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PathProblem {
    EmptySegment,
    Uppercase { segment: String },
    BadCharacter { segment: String, ch: char },
    EdgeHyphen { segment: String },
    DoubleHyphen { segment: String },
    TooManySegments { count: usize },
    TooLong { len: usize },
}

impl DynamoPath {
    pub fn root() -> Self {
        DynamoPath(ROOT.to_owned())
    }

    /// Parses a path as a user wrote it. A value whose first segment is not `default` is relative to
    /// the root. Nothing is rewritten except the prefixing: a malformed value is an error.
    pub fn parse(raw: &str) -> Result<Self, PathError> {
        let fail = |problem| {
            Err(PathError {
                problem,
                suggestion: suggest(raw),
            })
        };
        let mut count = 0;
        for segment in raw.split('/') {
            count += 1;
            if let Err(problem) = check_segment(segment) {
                return fail(problem);
            }
        }
        let relative = raw != ROOT && !raw.starts_with("default/");
        let canonical = if relative {
            count += 1;
            format!("{ROOT}/{raw}")
        } else {
            raw.to_owned()
        };
        if count > MAX_SEGMENTS {
            return fail(PathProblem::TooManySegments { count });
        }
        if canonical.len() > MAX_LEN {
            return fail(PathProblem::TooLong {
                len: canonical.len(),
            });
        }
        Ok(DynamoPath(canonical))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn is_root(&self) -> bool {
        self.0 == ROOT
    }

    /// Segments after the root.
    pub fn below_root(&self) -> impl Iterator<Item = &str> {
        self.0.split('/').skip(1)
    }

    /// True when `self` lies strictly below `ancestor`.
    pub fn is_descendant_of(&self, ancestor: &DynamoPath) -> bool {
        self.0.len() > ancestor.0.len()
            && self.0.starts_with(&ancestor.0)
            && self.0.as_bytes()[ancestor.0.len()] == b'/'
    }

    /// The runtime token (SPEC section 4): the k8s namespace, then `--<segment>` for each segment
    /// below the root. Today's runtime breaks on `/` and `.`, so the hierarchy is spelled with `--`.
    pub fn token(&self, k8s_namespace: &str) -> String {
        let mut token = String::with_capacity(k8s_namespace.len() + self.0.len());
        token.push_str(k8s_namespace);
        for segment in self.below_root() {
            token.push_str(TOKEN_SEPARATOR);
            token.push_str(segment);
        }
        token
    }

    /// The path as a label value: label values allow no `/`, and `.` cannot occur in a segment.
    pub fn label_value(&self) -> String {
        self.0.replace('/', ".")
    }
}

impl fmt::Display for DynamoPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn check_segment(segment: &str) -> Result<(), PathProblem> {
    if segment.is_empty() {
        return Err(PathProblem::EmptySegment);
    }
    let owned = || segment.to_owned();
    if let Some(ch) = segment.chars().find(|c| !is_segment_char(*c)) {
        return Err(if ch.is_ascii_uppercase() {
            PathProblem::Uppercase { segment: owned() }
        } else {
            PathProblem::BadCharacter {
                segment: owned(),
                ch,
            }
        });
    }
    if segment.starts_with('-') || segment.ends_with('-') {
        return Err(PathProblem::EdgeHyphen { segment: owned() });
    }
    if segment.contains("--") {
        return Err(PathProblem::DoubleHyphen { segment: owned() });
    }
    Ok(())
}

fn is_segment_char(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'
}

/// A valid canonical path close to `raw`: lowercased, other characters turned into `-`, empty
/// segments dropped, cut to the limits. Used only in messages, never stored.
pub fn suggest(raw: &str) -> String {
    let mut segments: Vec<String> = Vec::new();
    for segment in raw.split('/') {
        let mut cleaned = String::new();
        for c in segment.chars().take(MAX_LEN) {
            let c = c.to_ascii_lowercase();
            let c = if is_segment_char(c) { c } else { '-' };
            if !(c == '-' && (cleaned.is_empty() || cleaned.ends_with('-'))) {
                cleaned.push(c);
            }
        }
        let cleaned = cleaned.trim_end_matches('-');
        if !cleaned.is_empty() {
            segments.push(cleaned.to_owned());
        }
    }
    if segments.first().map(String::as_str) != Some(ROOT) {
        segments.insert(0, ROOT.to_owned());
    }
    segments.truncate(MAX_SEGMENTS);
    let mut path = segments.join("/");
    if path.len() > MAX_LEN {
        path.truncate(MAX_LEN);
        let trimmed = path.trim_end_matches(['-', '/']).len();
        path.truncate(trimmed);
    }
    debug_assert!(
        DynamoPath::parse(&path).is_ok(),
        "suggestion {path:?} is invalid"
    );
    path
}

/// Shows a user-supplied value in a one-line message: quoted, escaped, and cut to a readable length.
pub fn quote(value: &str) -> String {
    quote_within(value, MAX_LEN + 1)
}

/// [`quote`] with a tighter cut, for parts shown beside the whole value.
pub fn quote_within(value: &str, shown: usize) -> String {
    let escaped: String = value.escape_debug().collect();
    if escaped.chars().count() > shown {
        let cut: String = escaped.chars().take(shown).collect();
        format!("\"{cut}…\"")
    } else {
        format!("\"{escaped}\"")
    }
}

impl fmt::Display for PathError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.problem {
            PathProblem::EmptySegment => {
                f.write_str("has an empty segment (leading, trailing or double '/')")?
            }
            PathProblem::Uppercase { segment } => write!(
                f,
                "segment {} has uppercase letters",
                quote_segment(segment)
            )?,
            PathProblem::BadCharacter { segment, ch } => write!(
                f,
                "segment {} has {:?}; only a-z, 0-9 and '-' are allowed",
                quote_segment(segment),
                ch
            )?,
            PathProblem::EdgeHyphen { segment } => write!(
                f,
                "segment {} must start and end with a letter or digit",
                quote_segment(segment)
            )?,
            PathProblem::DoubleHyphen { segment } => write!(
                f,
                "segment {} contains \"--\", which the runtime token reserves",
                quote_segment(segment)
            )?,
            PathProblem::TooManySegments { count } => write!(
                f,
                "has {count} segments with the root; at most {MAX_SEGMENTS} are allowed"
            )?,
            PathProblem::TooLong { len } => write!(
                f,
                "is {len} characters with the root; at most {MAX_LEN} are allowed"
            )?,
        }
        write!(f, "; use e.g. {}", quote(&self.suggestion))
    }
}

fn quote_segment(segment: &str) -> String {
    quote_within(segment, 24)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths_are_placed_under_the_root() {
        assert_eq!(
            DynamoPath::parse("llama").unwrap().as_str(),
            "default/llama"
        );
        assert_eq!(DynamoPath::parse("default").unwrap().as_str(), "default");
        assert_eq!(
            DynamoPath::parse("default/a/b").unwrap().as_str(),
            "default/a/b"
        );
        assert_eq!(
            DynamoPath::parse("defaults/a").unwrap().as_str(),
            "default/defaults/a"
        );
        assert_eq!(
            DynamoPath::parse("a/default").unwrap().as_str(),
            "default/a/default"
        );
    }

    #[test]
    fn limits_apply_to_the_canonical_form() {
        let at_limit = format!("default/{}", "a".repeat(MAX_LEN - 8));
        assert!(DynamoPath::parse(&at_limit).is_ok());
        let relative_at_limit = "a".repeat(MAX_LEN - 8);
        assert!(DynamoPath::parse(&relative_at_limit).is_ok());
        let over = "a".repeat(MAX_LEN - 7);
        assert_eq!(
            DynamoPath::parse(&over).unwrap_err().problem,
            PathProblem::TooLong { len: 64 }
        );
        assert!(DynamoPath::parse("a/b/c/d/e/f/g").is_ok());
        assert_eq!(
            DynamoPath::parse("a/b/c/d/e/f/g/h").unwrap_err().problem,
            PathProblem::TooManySegments { count: 9 }
        );
    }

    #[test]
    fn malformed_values_name_the_segment_and_suggest_a_fix() {
        let err = DynamoPath::parse("default/Team_A").unwrap_err();
        assert_eq!(
            err.to_string(),
            "segment \"Team_A\" has uppercase letters; use e.g. \"default/team-a\""
        );
        let err = DynamoPath::parse("team.a").unwrap_err();
        assert!(err.to_string().contains("has '.'"), "{err}");
        assert_eq!(err.suggestion, "default/team-a");
        for bad in ["", "/a", "a/", "a//b", " a", "a-", "-a", "a--b", "ä"] {
            assert!(DynamoPath::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn tokens_and_labels() {
        let p = DynamoPath::parse("default/llama/fast").unwrap();
        assert_eq!(p.token("team-x"), "team-x--llama--fast");
        assert_eq!(p.label_value(), "default.llama.fast");
        assert_eq!(DynamoPath::root().token("team-x"), "team-x");
    }

    #[test]
    fn descendants() {
        let a = DynamoPath::parse("a").unwrap();
        let ab = DynamoPath::parse("a/b").unwrap();
        let a2 = DynamoPath::parse("a2").unwrap();
        assert!(ab.is_descendant_of(&a));
        assert!(a.is_descendant_of(&DynamoPath::root()));
        assert!(!a2.is_descendant_of(&a));
        assert!(!a.is_descendant_of(&a));
    }
}
