//! The password policy: at least 12 characters and not a common password
//! (NIST SP 800-63B §5.1.1.2: length and a blocklist, no composition rules).

use std::collections::HashSet;
use std::fmt;
use std::sync::LazyLock;

const MIN_CHARS: usize = 12;
/// Long enough for any passphrase; argon2 cost does not depend on it, but forms do.
const MAX_CHARS: usize = 256;

static COMMON: LazyLock<HashSet<&'static str>> = LazyLock::new(|| {
    include_str!("common-passwords.txt")
        .lines()
        .filter(|l| !l.starts_with('#'))
        .collect()
});

/// A password that passed the policy. Its `Debug` never shows it.
#[derive(Clone)]
pub struct NewPassword(String);

/// Why a new password was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PasswordProblem {
    #[error("Use at least 12 characters; a few unrelated words make a good password.")]
    TooShort,
    #[error("Use at most 256 characters.")]
    TooLong,
    #[error("This password is on a list of commonly used passwords; choose another.")]
    Common,
    #[error("The two passwords do not match.")]
    Mismatch,
}

impl NewPassword {
    /// Checks a password typed twice.
    pub fn parse(password: &str, confirm: &str) -> Result<Self, PasswordProblem> {
        let n = password.chars().count();
        if n < MIN_CHARS {
            return Err(PasswordProblem::TooShort);
        }
        if n > MAX_CHARS {
            return Err(PasswordProblem::TooLong);
        }
        if is_common(password) {
            return Err(PasswordProblem::Common);
        }
        if password != confirm {
            return Err(PasswordProblem::Mismatch);
        }
        Ok(NewPassword(password.to_owned()))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for NewPassword {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("NewPassword(***)")
    }
}

/// A listed password, or one made of a listed password with only digits and
/// punctuation around it ("Password1234!"), or a single repeated character.
fn is_common(password: &str) -> bool {
    let lower = password.to_lowercase();
    if COMMON.contains(lower.as_str()) {
        return true;
    }
    let core = lower.trim_matches(|c: char| c.is_ascii_digit() || c.is_ascii_punctuation());
    if core.chars().count() >= 4 && COMMON.contains(core) {
        return true;
    }
    let mut chars = lower.chars();
    let first = chars.next();
    chars.all(|c| Some(c) == first)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_common_and_mismatched_passwords_are_refused() {
        assert_eq!(
            NewPassword::parse("short", "short").unwrap_err(),
            PasswordProblem::TooShort
        );
        for common in [
            "qwerty123456",
            "Password1234!",
            "aaaaaaaaaaaaaa",
            "iloveyou2024!!",
        ] {
            assert_eq!(
                NewPassword::parse(common, common).unwrap_err(),
                PasswordProblem::Common,
                "{common}"
            );
        }
        assert_eq!(
            NewPassword::parse("harbor-violet-cactus", "harbor-violet-cactuz").unwrap_err(),
            PasswordProblem::Mismatch
        );
        let ok = NewPassword::parse("harbor-violet-cactus", "harbor-violet-cactus").unwrap();
        assert_eq!(format!("{ok:?}"), "NewPassword(***)");
    }
}
