//! Password hashing and verification in Dovecot's `{SCHEME}hash` notation.

use std::fmt;

use argon2::{Argon2, PasswordHasher, PasswordVerifier};
use sha_crypt::ShaCrypt;

use crate::Secret;

/// Longest password accepted, in bytes. Longer input is never hashed:
/// SHA-crypt's cost grows with the square of the password length, so an
/// unbounded password would let a client burn CPU.
pub const MAX_PASSWORD_LEN: usize = 1024;

/// The password schemes this crate verifies (with Dovecot's names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scheme {
    /// `ARGON2ID`: `$argon2id$...` PHC string. Used for new passwords.
    Argon2id,
    /// `ARGON2I`: `$argon2i$...` PHC string.
    Argon2i,
    /// `SHA512-CRYPT`: `$6$...`.
    Sha512Crypt,
    /// `SHA256-CRYPT`: `$5$...`.
    Sha256Crypt,
    /// `BLF-CRYPT` (bcrypt): `$2y$`, `$2b$` or `$2a$`.
    BlfCrypt,
    /// `PLAIN` or `CLEARTEXT`: the password itself.
    Plain,
}

impl Scheme {
    /// Dovecot's name for the scheme.
    pub fn name(self) -> &'static str {
        match self {
            Scheme::Argon2id => "ARGON2ID",
            Scheme::Argon2i => "ARGON2I",
            Scheme::Sha512Crypt => "SHA512-CRYPT",
            Scheme::Sha256Crypt => "SHA256-CRYPT",
            Scheme::BlfCrypt => "BLF-CRYPT",
            Scheme::Plain => "PLAIN",
        }
    }

    /// The scheme of a crypt-style hash, from its `$id$` prefix.
    fn from_crypt_prefix(hash: &str) -> Option<Scheme> {
        if hash.starts_with("$argon2id$") {
            Some(Scheme::Argon2id)
        } else if hash.starts_with("$argon2i$") {
            Some(Scheme::Argon2i)
        } else if hash.starts_with("$6$") {
            Some(Scheme::Sha512Crypt)
        } else if hash.starts_with("$5$") {
            Some(Scheme::Sha256Crypt)
        } else if hash.starts_with("$2y$") || hash.starts_with("$2b$") || hash.starts_with("$2a$") {
            Some(Scheme::BlfCrypt)
        } else {
            None
        }
    }
}

impl fmt::Display for Scheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a stored password could not be checked or a new one not hashed.
/// Never contains the password or the stored hash.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HashError {
    /// The stored password uses a scheme this server does not support.
    #[error("unsupported password scheme {{{0}}}")]
    UnsupportedScheme(String),
    /// The stored password has no `{SCHEME}` prefix and is not a
    /// recognised crypt hash (`$6$`, `$5$`, `$2y$`, `$argon2id$`, ...).
    #[error("stored password has no {{SCHEME}} prefix and is not a recognised hash")]
    UnknownFormat,
    /// The stored hash is not valid for its scheme.
    #[error("stored {scheme} hash is malformed: {reason}")]
    Malformed {
        /// The scheme named or recognised.
        scheme: Scheme,
        /// What is wrong (no hash content).
        reason: String,
    },
    /// Hashing a new password failed.
    #[error("hashing the password failed: {0}")]
    Hashing(String),
}

/// Argon2id cost parameters for new passwords.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HashParams {
    /// Memory in KiB.
    pub m_cost: u32,
    /// Iterations.
    pub t_cost: u32,
    /// Parallelism.
    pub p_cost: u32,
}

impl Default for HashParams {
    /// 19 MiB, 2 iterations, 1 lane: the OWASP recommendation, and the
    /// argon2 crate's default.
    fn default() -> Self {
        HashParams {
            m_cost: argon2::Params::DEFAULT_M_COST,
            t_cost: argon2::Params::DEFAULT_T_COST,
            p_cost: argon2::Params::DEFAULT_P_COST,
        }
    }
}

impl HashParams {
    fn argon2(&self) -> Result<Argon2<'static>, HashError> {
        let params = argon2::Params::new(self.m_cost, self.t_cost, self.p_cost, None)
            .map_err(|e| HashError::Hashing(e.to_string()))?;
        Ok(Argon2::new(
            argon2::Algorithm::Argon2id,
            argon2::Version::V0x13,
            params,
        ))
    }
}

/// Hashes a new password as `{ARGON2ID}$argon2id$v=19$m=...,t=...,p=...$salt$hash`,
/// as `doveadm pw -s ARGON2ID` writes it, with a random 16-byte salt.
pub fn hash_password(password: &Secret<String>, params: &HashParams) -> Result<String, HashError> {
    let hash = params
        .argon2()?
        .hash_password(password.expose().as_bytes())
        .map_err(|e| HashError::Hashing(e.to_string()))?;
    Ok(format!("{{ARGON2ID}}{hash}"))
}

/// Splits a stored password into its scheme and the hash proper.
pub fn parse_stored(stored: &str) -> Result<(Scheme, &str), HashError> {
    if let Some(rest) = stored.strip_prefix('{') {
        if let Some((name, hash)) = rest.split_once('}') {
            let upper = name.to_ascii_uppercase();
            let scheme = match upper.as_str() {
                "ARGON2ID" => Scheme::Argon2id,
                "ARGON2I" => Scheme::Argon2i,
                "SHA512-CRYPT" => Scheme::Sha512Crypt,
                "SHA256-CRYPT" => Scheme::Sha256Crypt,
                "BLF-CRYPT" => Scheme::BlfCrypt,
                "PLAIN" | "CLEARTEXT" => Scheme::Plain,
                // Dovecot's CRYPT hands the hash to crypt(3), which
                // recognises the modern hashes by prefix; the old DES and
                // MD5 forms are not supported here.
                "CRYPT" => {
                    return Scheme::from_crypt_prefix(hash)
                        .filter(|s| *s != Scheme::Plain)
                        .map(|s| (s, hash))
                        .ok_or(HashError::UnsupportedScheme(
                            "CRYPT (only $6$, $5$, $2y$/$2b$/$2a$ and $argon2 hashes are supported)"
                                .into(),
                        ));
                }
                _ => {
                    // Name the scheme, but never echo a long or odd string.
                    let shown: String = name
                        .chars()
                        .take(40)
                        .map(|c| if c.is_control() { '?' } else { c })
                        .collect();
                    return Err(HashError::UnsupportedScheme(shown));
                }
            };
            let prefix_ok = match scheme {
                Scheme::Plain => true,
                s => Scheme::from_crypt_prefix(hash) == Some(s),
            };
            if !prefix_ok {
                return Err(HashError::Malformed {
                    scheme,
                    reason: "the hash does not start with this scheme's $id$ prefix".into(),
                });
            }
            return Ok((scheme, hash));
        }
    }
    Scheme::from_crypt_prefix(stored)
        .map(|s| (s, stored))
        .ok_or(HashError::UnknownFormat)
}

/// Checks `password` against a stored password in any supported scheme.
/// `Ok(false)` is a wrong password; an error means the stored password
/// cannot be checked (and so never matches).
pub fn verify_password(stored: &str, password: &[u8]) -> Result<bool, HashError> {
    let (scheme, hash) = parse_stored(stored)?;
    if password.len() > MAX_PASSWORD_LEN {
        return Ok(false);
    }
    let malformed = |e: &dyn fmt::Display| HashError::Malformed {
        scheme,
        reason: e.to_string(),
    };
    match scheme {
        Scheme::Argon2id | Scheme::Argon2i => {
            if argon2_memory_kib(hash).is_some_and(|m| m > MAX_ARGON2_M_COST) {
                return Err(HashError::Malformed {
                    scheme,
                    reason: format!(
                        "memory cost above this server's limit of {MAX_ARGON2_M_COST} KiB"
                    ),
                });
            }
            match Argon2::default().verify_password(password, hash) {
                Ok(()) => Ok(true),
                Err(argon2::password_hash::Error::PasswordInvalid) => Ok(false),
                Err(e) => Err(malformed(&e)),
            }
        }
        Scheme::Sha512Crypt | Scheme::Sha256Crypt => {
            match ShaCrypt::default().verify_password(password, hash) {
                Ok(()) => Ok(true),
                Err(sha_crypt::password_hash::Error::PasswordInvalid) => Ok(false),
                Err(e) => Err(malformed(&e)),
            }
        }
        Scheme::BlfCrypt => bcrypt::verify(password, hash).map_err(|e| malformed(&e)),
        Scheme::Plain => Ok(constant_time_eq(hash.as_bytes(), password)),
    }
}

/// Largest Argon2 memory cost (KiB) a stored hash may ask for: 4 GiB. A
/// typing error in the file must not make a server try to allocate more
/// memory than the machine has, which would abort the whole process.
pub const MAX_ARGON2_M_COST: u64 = 4 * 1024 * 1024;

/// The `m=` parameter of an Argon2 PHC string, if present and numeric.
fn argon2_memory_kib(hash: &str) -> Option<u64> {
    hash.split('$')
        .flat_map(|seg| seg.split(','))
        .find_map(|kv| kv.strip_prefix("m="))
        .and_then(|v| v.parse().ok())
}

/// Compares two byte strings in time that depends only on their lengths.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    const PW: &[u8] = b"correct horse";

    /// Cheap parameters so debug-build tests stay fast.
    pub(crate) const FAST: HashParams = HashParams {
        m_cost: 64,
        t_cost: 1,
        p_cost: 1,
    };

    // Hashes of "correct horse" made outside Rust: SHA-crypt and bcrypt
    // with Python 3.11's crypt module (glibc/libxcrypt), Argon2 with the
    // reference `argon2` command (Debian package argon2).
    const EXTERNAL: &[(&str, Scheme)] = &[
        (
            "$6$Vh7Cy2gQ0zQfTQ3B$rL3i2pldAVVtOq4dMKQDpWMISDkpN1MK3gNbgi4F/yjhrNN.dFpAQ0j9.1eSN/mXeb/johyxFGsoKhwBQFgG3.",
            Scheme::Sha512Crypt,
        ),
        (
            "$6$rounds=5000$usesomesillystri$QWqf8PWMt5i07kZwWBLQNhUYokoRR3QYESDc9qFyU7XHqTY51VMDGnlS5BbM9peWfTFKE5azPwGkE5M0bDLay.",
            Scheme::Sha512Crypt,
        ),
        (
            "$5$Vh7Cy2gQ0zQfTQ3B$YMUCgQjBP8d6SHCCMicuIswtEYaxmv0cghKlWof0a02",
            Scheme::Sha256Crypt,
        ),
        (
            "$5$rounds=10000$saltstringsaltst$ffO6RHJbzihHqETll0c/MLDJrGhQw9fAaO1LcVIStWB",
            Scheme::Sha256Crypt,
        ),
        (
            "$2b$05$abcdefghijklmnopqrstuuHNbAKRhpaujgo33bRWs.NLUTJO3lOy2",
            Scheme::BlfCrypt,
        ),
        (
            "$2y$05$ABCDEFGHIJKLMNOPQRSTUuoRzMfTz14Et2G0HCoDlm3q91eDCVDS2",
            Scheme::BlfCrypt,
        ),
        (
            "$2a$05$ABCDEFGHIJKLMNOPQRSTUuoRzMfTz14Et2G0HCoDlm3q91eDCVDS2",
            Scheme::BlfCrypt,
        ),
        (
            "$argon2id$v=19$m=1024,t=2,p=1$c2FsdHNhbHRzYWx0$H5rnCvoHJK5J3ADJ9mc9NL74Ow2lIMZ5zI+CyR256y0",
            Scheme::Argon2id,
        ),
        (
            "$argon2i$v=19$m=1024,t=2,p=1$c2FsdHNhbHRzYWx0$sd2wE4z6YKcwaFhcyqP4TORSrNKt7aNTBs3DelB3HkQ",
            Scheme::Argon2i,
        ),
    ];

    #[test]
    fn external_vectors_verify_with_and_without_scheme_prefix() {
        for (hash, scheme) in EXTERNAL {
            assert_eq!(parse_stored(hash).unwrap().0, *scheme, "{hash}");
            assert_eq!(verify_password(hash, PW), Ok(true), "{hash}");
            assert_eq!(verify_password(hash, b"correct horsE"), Ok(false), "{hash}");
            assert_eq!(verify_password(hash, b""), Ok(false), "{hash}");
            let prefixed = format!("{{{}}}{hash}", scheme.name());
            assert_eq!(verify_password(&prefixed, PW), Ok(true), "{prefixed}");
            assert_eq!(
                verify_password(&prefixed, b"wrong"),
                Ok(false),
                "{prefixed}"
            );
            // Scheme names are case-insensitive, and CRYPT covers them.
            let lower = format!("{{{}}}{hash}", scheme.name().to_lowercase());
            assert_eq!(verify_password(&lower, PW), Ok(true), "{lower}");
            let crypt = format!("{{CRYPT}}{hash}");
            assert_eq!(verify_password(&crypt, PW), Ok(true), "{crypt}");
        }
    }

    #[test]
    fn drepper_specification_vectors() {
        // From "Unix crypt using SHA-256 and SHA-512" (U. Drepper), the
        // reference for SHA256-CRYPT and SHA512-CRYPT.
        let pw = b"Hello world!";
        assert_eq!(
            verify_password(
                "{SHA512-CRYPT}$6$saltstring$svn8UoSVapNtMuq1ukKS4tPQd8iKwSMHWjl/O817G3uBnIFNjnQJuesI68u4OTLiBFdcbYEdFCoEOfaS35inz1",
                pw
            ),
            Ok(true)
        );
        assert_eq!(
            verify_password(
                "{SHA256-CRYPT}$5$saltstring$5B8vYYiY.CVt1RlTTf8KbXBH3hsxY/GNooZaBBGWEc5",
                pw
            ),
            Ok(true)
        );
        assert_eq!(
            verify_password(
                "$6$rounds=10000$saltstringsaltst$OW1/O6BYHV6BcXZu8QVeXbDWra3Oeqh0sbHbbMCVNSnCM/UrjmM0Dp8vOuZeHBy/YTBmSK6H9qs/y3RnOaw5v.",
                pw
            ),
            Ok(true)
        );
    }

    #[test]
    fn crate_generated_hashes_verify() {
        use sha_crypt::{Algorithm, Params};
        let sha512 = ShaCrypt::new(Algorithm::Sha512Crypt, Params::RECOMMENDED)
            .hash_password_with_salt(PW, b"0123456789abcdef")
            .unwrap()
            .to_string();
        let sha256 = ShaCrypt::new(Algorithm::Sha256Crypt, Params::RECOMMENDED)
            .hash_password_with_salt(PW, b"fedcba9876543210")
            .unwrap()
            .to_string();
        let blf = bcrypt::hash(PW, 4).unwrap();
        for (hash, scheme) in [
            (sha512, "SHA512-CRYPT"),
            (sha256, "SHA256-CRYPT"),
            (blf, "BLF-CRYPT"),
        ] {
            let stored = format!("{{{scheme}}}{hash}");
            assert_eq!(verify_password(&stored, PW), Ok(true), "{stored}");
            assert_eq!(verify_password(&stored, b"nope"), Ok(false), "{stored}");
        }
    }

    #[test]
    fn new_hashes_are_argon2id_phc_strings() {
        let pw = Secret::new("correct horse".to_string());
        let a = hash_password(&pw, &FAST).unwrap();
        let b = hash_password(&pw, &FAST).unwrap();
        assert!(
            a.starts_with("{ARGON2ID}$argon2id$v=19$m=64,t=1,p=1$"),
            "{a}"
        );
        assert_ne!(a, b, "salts are random");
        assert!(!a.contains(':') && !a.contains('\n'));
        assert_eq!(verify_password(&a, PW), Ok(true));
        assert_eq!(verify_password(&a, b"correct horsf"), Ok(false));
        let default = hash_password(&pw, &HashParams::default()).unwrap();
        assert!(
            default.starts_with("{ARGON2ID}$argon2id$v=19$m=19456,t=2,p=1$"),
            "{default}"
        );
        let bad = HashParams { m_cost: 1, ..FAST };
        assert!(matches!(
            hash_password(&pw, &bad),
            Err(HashError::Hashing(_))
        ));
    }

    #[test]
    fn plain_and_cleartext() {
        assert_eq!(verify_password("{PLAIN}correct horse", PW), Ok(true));
        assert_eq!(verify_password("{CLEARTEXT}correct horse", PW), Ok(true));
        assert_eq!(verify_password("{plain}correct horse", PW), Ok(true));
        assert_eq!(verify_password("{PLAIN}correct hors", PW), Ok(false));
        assert_eq!(verify_password("{PLAIN}correct horse!", PW), Ok(false));
        assert_eq!(verify_password("{PLAIN}", b""), Ok(true));
        // Without a prefix, text is never taken as a plaintext password.
        assert_eq!(
            verify_password("correct horse", PW),
            Err(HashError::UnknownFormat)
        );
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }

    #[test]
    fn unknown_schemes_fail_naming_the_scheme() {
        for (stored, scheme) in [
            ("{MD5-CRYPT}$1$abcdefgh$xxxxxxxxxxxxxxxxxxxxxx", "MD5-CRYPT"),
            ("{SSHA}abcdef", "SSHA"),
            ("{SHA512-CRYPT.b64}x", "SHA512-CRYPT.b64"),
            ("{}correct horse", ""),
        ] {
            let err = verify_password(stored, PW).unwrap_err();
            assert_eq!(err, HashError::UnsupportedScheme(scheme.into()));
            assert!(err.to_string().contains(&format!("{{{scheme}}}")), "{err}");
        }
        let err = verify_password("{CRYPT}abJnggxhB/yWI", PW).unwrap_err();
        assert!(err.to_string().contains("CRYPT"), "{err}");
        for stored in ["$1$abcdefgh$xxxx", "abJnggxhB/yWI", "", "{unterminated"] {
            assert_eq!(
                verify_password(stored, PW),
                Err(HashError::UnknownFormat),
                "{stored}"
            );
        }
    }

    #[test]
    fn malformed_hashes_never_verify() {
        for stored in [
            "{SHA512-CRYPT}$5$Vh7Cy2gQ0zQfTQ3B$YMUCgQjBP8d6SHCCMicuIswtEYaxmv0cghKlWof0a02",
            "{ARGON2ID}$argon2i$v=19$m=1024,t=2,p=1$c2FsdHNhbHRzYWx0$sd2wE4z6YKcwaFhcyqP4TORSrNKt7aNTBs3DelB3HkQ",
            "{ARGON2ID}$argon2id$garbage",
            "{ARGON2I}$argon2i$v=19$m=1024,t=2,p=1$c2FsdHNhbHRzYWx0$!!!",
            "{SHA512-CRYPT}$6$",
            "{SHA512-CRYPT}$6$salt$not*base64",
            "{SHA256-CRYPT}$5$rounds=10$salt$abc",
            "{BLF-CRYPT}$2y$05$short",
            "{BLF-CRYPT}$2b$99$abcdefghijklmnopqrstuuHNbAKRhpaujgo33bRWs.NLUTJO3lOy2",
            "{BLF-CRYPT}$2x$05$ABCDEFGHIJKLMNOPQRSTUuoRzMfTz14Et2G0HCoDlm3q91eDCVDS2",
            "$2b$05$abcdefghijklmnopqrstuuHNbAKRhpaujgo33bRWs.NLUTJO3lOyé",
        ] {
            let r = verify_password(stored, PW);
            assert!(
                matches!(r, Err(HashError::Malformed { .. })),
                "{stored}: {r:?}"
            );
        }
    }

    #[test]
    fn huge_argon2_memory_cost_is_refused_before_allocating() {
        let stored = "{ARGON2ID}$argon2id$v=19$m=4294967295,t=2,p=1$c2FsdHNhbHRzYWx0$H5rnCvoHJK5J3ADJ9mc9NL74Ow2lIMZ5zI+CyR256y0";
        let err = verify_password(stored, PW).unwrap_err();
        assert!(err.to_string().contains("limit"), "{err}");
    }

    /// A tiny deterministic generator for the mutation test.
    struct XorShift(u64);
    impl XorShift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
    }

    #[test]
    fn mutated_hashes_never_panic_or_verify_wrongly() {
        let fast_argon = hash_password(&Secret::new("correct horse".into()), &FAST).unwrap();
        let seeds = [
            format!("{{SHA512-CRYPT}}{}", EXTERNAL[0].0),
            format!("{{SHA256-CRYPT}}{}", EXTERNAL[2].0),
            format!("{{BLF-CRYPT}}{}", EXTERNAL[4].0),
            fast_argon,
            "{PLAIN}correct horse".to_string(),
        ];
        let alphabet = b"$./0123456789=,:{}abzAZ+\x00\xff";
        let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
        for seed in &seeds {
            for _ in 0..40 {
                let mut bytes = seed.clone().into_bytes();
                match rng.next() % 3 {
                    0 => {
                        let i = (rng.next() as usize) % bytes.len();
                        bytes[i] = alphabet[(rng.next() as usize) % alphabet.len()];
                    }
                    1 => {
                        let i = (rng.next() as usize) % bytes.len();
                        bytes.truncate(i);
                    }
                    _ => {
                        let i = (rng.next() as usize) % bytes.len();
                        bytes.remove(i);
                    }
                }
                let stored = String::from_utf8_lossy(&bytes).into_owned();
                // Must not panic, and must not accept a wrong password.
                assert_ne!(
                    verify_password(&stored, b"not the password"),
                    Ok(true),
                    "{stored}"
                );
            }
        }
    }

    #[test]
    fn overlong_passwords_are_refused_without_hashing() {
        let long = vec![b'a'; MAX_PASSWORD_LEN + 1];
        let stored = format!("{{PLAIN}}{}", "a".repeat(MAX_PASSWORD_LEN + 1));
        assert_eq!(verify_password(&stored, &long), Ok(false));
        assert_eq!(
            verify_password(EXTERNAL[0].0, &long),
            Ok(false),
            "no quadratic SHA-crypt work"
        );
    }
}
