//! The error body of every failed call: `application/problem+json` (RFC 9457) plus a `hint`.
//!
//! The client prints `title`/`detail` as `error: …` and `hint` as `hint: …`; it never shows a
//! debug dump. Tunnels that fail before their 200 carry the same body.

use serde::{Deserialize, Serialize};

/// Content type of [`Problem`] bodies.
pub const PROBLEM_CONTENT_TYPE: &str = "application/problem+json";

/// An RFC 9457 problem document with virtgate's `hint` extension.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    /// A URI naming the kind of problem; `about:blank` when the status says it all. Stable, so
    /// scripts and the client can branch on it (e.g. `urn:virtgate:domain-not-found`).
    #[serde(rename = "type", default = "about_blank")]
    pub kind: String,
    /// Short summary that does not change between occurrences.
    pub title: String,
    /// HTTP status code, repeated in the body for clients that lose it.
    pub status: u16,
    /// What happened this time, naming the objects involved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// What the user can do about it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

fn about_blank() -> String {
    "about:blank".into()
}

impl Problem {
    /// A problem with a stable kind (`urn:virtgate:KIND`), a title and a status.
    pub fn new(status: u16, kind: &str, title: impl Into<String>) -> Self {
        Problem {
            kind: format!("urn:virtgate:{kind}"),
            title: title.into(),
            status,
            detail: None,
            hint: None,
        }
    }

    pub fn detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// The short kind name (`domain-not-found`) without the `urn:virtgate:` prefix.
    pub fn kind_name(&self) -> &str {
        self.kind
            .strip_prefix("urn:virtgate:")
            .unwrap_or(&self.kind)
    }
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.detail {
            Some(d) => write!(f, "{}: {}", self.title, d),
            None => f.write_str(&self.title),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_has_rfc9457_names_and_hint() {
        let p = Problem::new(404, "domain-not-found", "no such domain")
            .detail("domain `x` does not exist or is not yours")
            .hint("run `virtgate list`");
        let v = serde_json::to_value(&p).unwrap();
        assert_eq!(v["type"], "urn:virtgate:domain-not-found");
        assert_eq!(v["status"], 404);
        assert_eq!(v["hint"], "run `virtgate list`");
        assert_eq!(p.kind_name(), "domain-not-found");
        let plain: Problem = serde_json::from_str(r#"{"title":"t","status":500}"#).unwrap();
        assert_eq!(plain.kind, "about:blank");
    }
}
