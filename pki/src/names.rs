//! Which names may go into certificates.
//!
//! A user name becomes a client certificate's CN (the identity the gateway sees) and the
//! stem of `USER.pem` / `USER.key`, so it must be safe as a file name. A DNS name goes
//! into a server certificate's subjectAltName and must be a host name (an address given
//! as `--dns` is pointed at `--ip`).

use std::net::IpAddr;

use rcgen::string::Ia5String;

use crate::error::CaError;

/// Longest CN X.509 allows (ub-common-name).
const MAX_CN: usize = 64;

/// Checks that `user` can be a CN and a file name: 1–64 characters out of letters,
/// digits and `. _ - @`, not starting with `.` or `-`.
pub fn check_user(user: &str) -> Result<(), CaError> {
    let refuse = |why| {
        Err(CaError::InvalidUser {
            name: user.to_string(),
            why,
        })
    };
    if user.is_empty() {
        return refuse("it is empty");
    }
    if user.len() > MAX_CN {
        return refuse("it is longer than 64 characters");
    }
    if user.starts_with('.') || user.starts_with('-') {
        return refuse("it starts with `.` or `-`");
    }
    if !user
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@'))
    {
        return refuse("it contains a character other than letters, digits and . _ - @");
    }
    Ok(())
}

/// Checks a DNS name for a server certificate and converts it for rcgen.
///
/// Labels of letters, digits and `-` separated by dots; a leading `*.` wildcard is
/// allowed. IP addresses are refused (they belong in `--ip`).
pub fn dns_name(name: &str) -> Result<Ia5String, CaError> {
    let refuse = |why| {
        Err(CaError::InvalidDnsName {
            name: name.to_string(),
            why,
        })
    };
    if name.parse::<IpAddr>().is_ok() || name.starts_with('[') {
        return refuse("it is an IP address: pass it with --ip");
    }
    if name.is_empty() || name.len() > 253 {
        return refuse("it must have 1 to 253 characters");
    }
    let host = name.strip_prefix("*.").unwrap_or(name);
    for label in host.split('.') {
        if label.is_empty() || label.len() > 63 {
            return refuse("every dot-separated part must have 1 to 63 characters");
        }
        if label.starts_with('-') || label.ends_with('-') {
            return refuse("a part may not start or end with `-`");
        }
        if !label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
            return refuse("only letters, digits, `-` and dots are allowed");
        }
    }
    match Ia5String::try_from(name.to_string()) {
        Ok(s) => Ok(s),
        Err(_) => refuse("only ASCII is allowed"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users() {
        for ok in ["alice", "bob.smith", "carol_1", "dave@EXAMPLE.ORG", "e-f"] {
            check_user(ok).unwrap();
        }
        for bad in [
            "",
            "../x",
            "a/b",
            ".hidden",
            "-opt",
            "a b",
            "é",
            &"x".repeat(65),
        ] {
            let err = check_user(bad).unwrap_err();
            assert!(matches!(err, CaError::InvalidUser { .. }), "{bad}");
            assert!(err.hint().is_some());
        }
    }

    #[test]
    fn dns_names() {
        for ok in ["localhost", "hv1.example.org", "*.example.org", "a-b.c"] {
            dns_name(ok).unwrap();
        }
        for bad in [
            "",
            "127.0.0.1",
            "::1",
            "a..b",
            "-a.b",
            "a_b",
            "a b",
            "x.*.org",
        ] {
            assert!(dns_name(bad).is_err(), "{bad}");
        }
        let err = dns_name("::1").unwrap_err();
        assert!(err.to_string().contains("--ip"));
    }
}
