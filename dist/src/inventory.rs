//! Which crates end up inside `virtgated`, `virtgate` and `virtgate-pki`, from
//! `cargo metadata` (for this machine's platform).
//!
//! Starting at the three packages, the walk follows normal dependencies only: build
//! dependencies and proc-macros run at build time and are not linked; dev-dependencies
//! only build tests. Workspace members are the project itself (Apache-2.0) and are left
//! out of the list.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

use serde::Deserialize;

/// The packages whose binaries the .deb ships.
pub const ROOTS: &[&str] = &["virtgate-gateway", "virtgate-client", "virtgate-pki"];

/// A crate linked into the programs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Crate {
    /// Its name on crates.io.
    pub name: String,
    /// Its version.
    pub version: String,
    /// Its SPDX licence expression (`MIT OR Apache-2.0`); empty when it has none.
    pub license: String,
    /// Its authors as its Cargo.toml names them (often empty).
    pub authors: Vec<String>,
}

/// Why the inventory could not be made.
#[derive(Debug, thiserror::Error)]
pub enum InventoryError {
    /// `cargo` could not be started.
    #[error("cannot run `{program}`: {error}")]
    Spawn {
        /// The program ($CARGO or `cargo`).
        program: String,
        /// Why.
        error: std::io::Error,
    },
    /// `cargo metadata` failed.
    #[error("`cargo metadata` failed: {stderr}")]
    Failed {
        /// What it printed.
        stderr: String,
    },
    /// Its output was not what this program understands.
    #[error("cannot read the output of `cargo metadata`: {detail}")]
    Parse {
        /// What was wrong.
        detail: String,
    },
}

impl InventoryError {
    /// What to do about it.
    pub fn hint(&self) -> String {
        match self {
            InventoryError::Spawn { .. } => {
                "run it where cargo is on PATH (or set CARGO to cargo's path)".to_string()
            }
            InventoryError::Failed { .. } => {
                "run it inside the virtgate workspace, or pass --manifest-path Cargo.toml"
                    .to_string()
            }
            InventoryError::Parse { .. } => {
                "this cargo's metadata format is not understood: use a cargo of 1.89 or later"
                    .to_string()
            }
        }
    }
}

/// The part of `cargo metadata` this program reads.
#[derive(Debug, Deserialize)]
struct Metadata {
    /// Every package of the dependency graph.
    packages: Vec<Package>,
    /// The resolved graph.
    resolve: Resolve,
    /// Ids of the workspace members.
    workspace_members: Vec<String>,
}

/// A package of `cargo metadata`.
#[derive(Debug, Deserialize)]
struct Package {
    /// Its id (key of the resolve graph).
    id: String,
    /// Name.
    name: String,
    /// Version.
    version: String,
    /// SPDX expression, if declared.
    license: Option<String>,
    /// Authors.
    #[serde(default)]
    authors: Vec<String>,
    /// Its targets (lib, proc-macro, bin, …).
    targets: Vec<Target>,
}

/// A target of a package.
#[derive(Debug, Deserialize)]
struct Target {
    /// `lib`, `proc-macro`, `bin`, …
    kind: Vec<String>,
}

/// The resolved dependency graph.
#[derive(Debug, Deserialize)]
struct Resolve {
    /// One node per package.
    nodes: Vec<Node>,
}

/// A node of the graph.
#[derive(Debug, Deserialize)]
struct Node {
    /// The package.
    id: String,
    /// Its dependencies, with their kinds.
    deps: Vec<NodeDep>,
}

/// One dependency edge.
#[derive(Debug, Deserialize)]
struct NodeDep {
    /// The package depended on.
    pkg: String,
    /// How it is depended on (normal = kind null, "dev", "build").
    dep_kinds: Vec<DepKind>,
}

/// One kind of an edge.
#[derive(Debug, Deserialize)]
struct DepKind {
    /// `None` for a normal dependency.
    kind: Option<String>,
}

/// The crates linked into the three programs, sorted by name and version.
pub fn linked_crates(manifest: Option<&Path>) -> Result<Vec<Crate>, InventoryError> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    let mut cmd = Command::new(&cargo);
    cmd.args(["metadata", "--format-version", "1", "--locked"]);
    if let Some(triple) = host_triple(&cargo) {
        cmd.args(["--filter-platform", &triple]);
    }
    if let Some(m) = manifest {
        cmd.arg("--manifest-path").arg(m);
    }
    let out = cmd.output().map_err(|error| InventoryError::Spawn {
        program: cargo.clone(),
        error,
    })?;
    if !out.status.success() {
        return Err(InventoryError::Failed {
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    let meta: Metadata =
        serde_json::from_slice(&out.stdout).map_err(|e| InventoryError::Parse {
            detail: e.to_string(),
        })?;
    Ok(walk(&meta))
}

/// The host's target triple, from `rustc -vV` (next to cargo).
fn host_triple(cargo: &str) -> Option<String> {
    let rustc = Path::new(cargo)
        .parent()
        .map(|d| d.join("rustc"))
        .filter(|p| p.is_file())
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "rustc".to_string());
    let out = Command::new(rustc).arg("-vV").output().ok()?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("host: "))
        .map(str::to_string)
}

/// Walks the normal, linked dependencies of [`ROOTS`].
fn walk(meta: &Metadata) -> Vec<Crate> {
    let packages: BTreeMap<&str, &Package> =
        meta.packages.iter().map(|p| (p.id.as_str(), p)).collect();
    let nodes: BTreeMap<&str, &Node> = meta
        .resolve
        .nodes
        .iter()
        .map(|n| (n.id.as_str(), n))
        .collect();
    let members: BTreeSet<&str> = meta.workspace_members.iter().map(String::as_str).collect();
    let mut todo: Vec<&str> = meta
        .packages
        .iter()
        .filter(|p| ROOTS.contains(&p.name.as_str()) && members.contains(p.id.as_str()))
        .map(|p| p.id.as_str())
        .collect();
    let mut seen: BTreeSet<&str> = BTreeSet::new();
    while let Some(id) = todo.pop() {
        if !seen.insert(id) {
            continue;
        }
        let Some(node) = nodes.get(id) else { continue };
        for dep in &node.deps {
            let normal = dep.dep_kinds.iter().any(|k| k.kind.is_none());
            let proc_macro = packages.get(dep.pkg.as_str()).is_some_and(|p| {
                p.targets
                    .iter()
                    .any(|t| t.kind.iter().any(|k| k == "proc-macro"))
            });
            if normal && !proc_macro {
                todo.push(dep.pkg.as_str());
            }
        }
    }
    let mut crates: Vec<Crate> = seen
        .into_iter()
        .filter(|id| !members.contains(id))
        .filter_map(|id| packages.get(id))
        .map(|p| Crate {
            name: p.name.clone(),
            version: p.version.clone(),
            license: p.license.clone().unwrap_or_default(),
            authors: p.authors.clone(),
        })
        .collect();
    crates.sort_by(|a, b| (&a.name, &a.version).cmp(&(&b.name, &b.version)));
    crates
}
