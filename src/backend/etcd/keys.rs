//! The keys of one election, and what crown lets into text: `--etcd-prefix` validation and the
//! escaping of control characters in anything read from etcd.

use crate::backend::BackendError;
use crate::election::Term;

/// Checks `--etcd-prefix`: printable characters only (no control characters), at most 256
/// bytes. Any other byte is allowed: crown joins elections of clients with any prefix.
pub fn validate_prefix(prefix: &str) -> Result<(), BackendError> {
    if prefix.len() > 256 || prefix.chars().any(char::is_control) {
        return Err(BackendError::Invalid(format!(
            "invalid --etcd-prefix {}: use at most 256 bytes of printable characters (no control characters)",
            escape(prefix)
        )));
    }
    Ok(())
}

/// Text for a terminal or a log line (see [`crate::text::escape`]).
pub(crate) fn escape(s: &str) -> String {
    crate::text::escape(s).into_owned()
}

/// The keys of one election.
pub(crate) struct Keys {
    /// `<prefix><election>`: the election key, as given to `etcdctl elect`.
    pub(crate) name: String,
    /// `<prefix><election>/`: where the candidates' keys live.
    pub(crate) candidates: String,
    pub(crate) members: String,
    pub(crate) history: String,
    pub(crate) floor: String,
    pub(crate) released: String,
    pub(crate) resign: String,
    /// `N:duty`: the success record of a `crown run --once` duty.
    pub(crate) duty: String,
}

impl Keys {
    pub(crate) fn new(prefix: &str, election: &str) -> Keys {
        let name = format!("{prefix}{election}");
        let aux = format!("{name}:");
        Keys {
            candidates: format!("{name}/"),
            name,
            members: format!("{aux}members:"),
            history: format!("{aux}history:"),
            floor: format!("{aux}floor"),
            released: format!("{aux}released"),
            resign: format!("{aux}resign"),
            duty: format!("{aux}duty"),
        }
    }

    pub(crate) fn member(&self, id: &str) -> String {
        format!("{}{id}", self.members)
    }

    pub(crate) fn history(&self, term: Term) -> String {
        format!("{}{:020}", self.history, term.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auxiliary_keys_are_outside_every_candidate_range() {
        let names = [
            "jobs",
            "jobs-members",
            "jobs-history",
            "jobs.crown",
            "a",
            "crown",
        ];
        for prefix in ["", "election/", "x."] {
            for a in names {
                let k = Keys::new(prefix, a);
                for aux in [
                    k.member("p-1"),
                    k.history(Term(7)),
                    k.floor,
                    k.released,
                    k.resign,
                    k.duty,
                ] {
                    for b in names {
                        let other = Keys::new(prefix, b);
                        assert!(
                            !aux.starts_with(&other.candidates),
                            "{aux:?} lies in election {b:?}'s range"
                        );
                    }
                    // No `/` after the prefix: in no election range of this prefix at all.
                    assert!(!aux[prefix.len()..].contains('/'), "{aux:?}");
                }
                // Member and history ranges of one election do not contain another's.
                for b in names {
                    if a != b {
                        let other = Keys::new(prefix, b);
                        assert!(!other.member("x").starts_with(&k.members));
                        assert!(!other.history(Term(1)).starts_with(&k.history));
                    }
                }
            }
        }
    }

    #[test]
    fn history_keys_sort_by_term() {
        let k = Keys::new("", "e");
        assert!(k.history(Term(9)) < k.history(Term(10)));
        assert_eq!(k.history(Term(7)), "e:history:00000000000000000007");
    }

    #[test]
    fn escaping_control_characters() {
        assert_eq!(escape("plain id"), "plain id");
        assert_eq!(escape("a\nBECAME"), "a\\nBECAME");
        assert_eq!(escape("\u{1b}[31mred"), "\\u{1b}[31mred");
    }

    #[test]
    fn prefixes() {
        assert!(validate_prefix("").is_ok());
        assert!(validate_prefix("election/").is_ok());
        assert!(validate_prefix("a b/ü").is_ok());
        assert!(validate_prefix("a\nb").is_err());
        assert!(validate_prefix("\u{1b}[2J").is_err());
        assert!(validate_prefix(&"x".repeat(257)).is_err());
    }
}
