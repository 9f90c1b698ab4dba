//! What `virtgate doctor` found: one [`Check`] per step, in the order they ran, printed for
//! people (`✓ step  detail`, with the hint under a failure or warning) or as one JSON array
//! of `{step, status, detail, hint}` for scripts.

use std::fmt::Write as _;

use serde::Serialize;

use crate::error::{chain_text, Error};

/// How a step ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// It worked.
    Ok,
    /// It worked, but something will bite soon (a certificate about to expire, a key
    /// others can read, a clock a few seconds off).
    Warn,
    /// It failed: `doctor` exits with status 1.
    Fail,
    /// It was not tried, because an earlier step it needs failed (or it does not apply).
    Skip,
}

impl Status {
    /// The mark printed before the step.
    pub fn mark(self) -> &'static str {
        match self {
            Status::Ok => "✓",
            Status::Warn => "!",
            Status::Fail => "✗",
            Status::Skip => "–",
        }
    }
}

/// One step and how it went.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    /// Which step (`config`, `tls`, `tcp`, …): stable names scripts can match on.
    pub step: &'static str,
    /// How it ended.
    pub status: Status,
    /// What was found, in words (the addresses, names, dates, the error).
    pub detail: String,
    /// What to do about a failure or warning (`null` when all is well).
    pub hint: Option<String>,
}

/// Every step so far, in order.
#[derive(Debug, Default)]
pub struct Report {
    /// The checks, in the order they ran.
    pub checks: Vec<Check>,
}

impl Report {
    /// Record a step.
    pub fn add(&mut self, step: &'static str, status: Status, detail: impl Into<String>) {
        self.checks.push(Check {
            step,
            status,
            detail: detail.into(),
            hint: None,
        });
    }

    /// Record a step with a hint.
    pub fn add_hint(
        &mut self,
        step: &'static str,
        status: Status,
        detail: impl Into<String>,
        hint: impl Into<String>,
    ) {
        self.checks.push(Check {
            step,
            status,
            detail: detail.into(),
            hint: Some(hint.into()),
        });
    }

    /// A step that worked.
    pub fn ok(&mut self, step: &'static str, detail: impl Into<String>) {
        self.add(step, Status::Ok, detail);
    }

    /// A step that failed with `err`: its message (with causes) and its hint.
    pub fn fail(&mut self, step: &'static str, err: &Error) {
        self.checks.push(Check {
            step,
            status: Status::Fail,
            detail: chain_text(err),
            hint: err.hint(),
        });
    }

    /// A step not tried, and why.
    pub fn skip(&mut self, step: &'static str, why: impl Into<String>) {
        self.add(step, Status::Skip, why);
    }

    /// Whether no step failed.
    pub fn passed(&self) -> bool {
        self.checks.iter().all(|c| c.status != Status::Fail)
    }

    /// The lines for people: the step names aligned, hints indented under their step.
    pub fn human(&self) -> String {
        let width = self
            .checks
            .iter()
            .map(|c| c.step.chars().count())
            .max()
            .unwrap_or(0);
        let pad = " ".repeat(width + 4);
        let mut out = String::new();
        for c in &self.checks {
            let _ = writeln!(out, "{} {:<width$}  {}", c.status.mark(), c.step, c.detail);
            if let Some(h) = &c.hint {
                for (i, line) in h.lines().enumerate() {
                    let lead = if i == 0 { "hint: " } else { "      " };
                    let _ = writeln!(out, "{pad}{lead}{line}");
                }
            }
        }
        let failed = self
            .checks
            .iter()
            .filter(|c| c.status == Status::Fail)
            .count();
        let warned = self
            .checks
            .iter()
            .filter(|c| c.status == Status::Warn)
            .count();
        match (failed, warned) {
            (0, 0) => out.push_str("all checks passed\n"),
            (0, w) => {
                let _ = writeln!(out, "all checks passed, {w} warning(s)");
            }
            (f, _) => {
                let _ = writeln!(out, "{f} check(s) failed");
            }
        }
        out
    }

    /// The JSON document: an array of `{step, status, detail, hint}`.
    pub fn json(&self) -> Result<String, Error> {
        super::super::json(&self.checks)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_lines_align_and_carry_hints() {
        let mut r = Report::default();
        r.ok("config", "/c/config.toml");
        r.add_hint(
            "tls",
            Status::Fail,
            "unknown issuer",
            "use the right CA\nreally",
        );
        r.skip("whoami", "needs TLS");
        assert_eq!(
            r.human(),
            "✓ config  /c/config.toml\n\
             ✗ tls     unknown issuer\n          hint: use the right CA\n                really\n\
             – whoami  needs TLS\n\
             1 check(s) failed\n"
        );
        assert!(!r.passed());
    }

    #[test]
    fn json_is_an_array_of_steps() {
        let mut r = Report::default();
        r.add_hint("clock", Status::Warn, "8 s ahead", "check NTP");
        r.ok("whoami", "alice");
        let v: serde_json::Value = serde_json::from_str(&r.json().unwrap()).unwrap();
        assert_eq!(v[0]["step"], "clock");
        assert_eq!(v[0]["status"], "warn");
        assert_eq!(v[0]["hint"], "check NTP");
        assert_eq!(v[1]["status"], "ok");
        assert!(v[1]["hint"].is_null());
        assert!(r.passed());
        assert!(r.human().ends_with("all checks passed, 1 warning(s)\n"));
    }
}
