//! Licence texts for the copyright file: for each SPDX identifier, its DEP-5 short name
//! and either its text (dist/licenses/) or the file of Debian's base-files that holds it.

/// How the copyright file gives a licence's text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Text {
    /// In `/usr/share/common-licenses/` (the file's name).
    Common(&'static str),
    /// In full, from dist/licenses/.
    Full(&'static str),
}

/// A licence as the copyright file names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct License {
    /// The SPDX identifier crates use (`MIT`).
    pub spdx: &'static str,
    /// Its DEP-5 short name (`Expat`).
    pub dep5: &'static str,
    /// Where its text is.
    pub text: Text,
}

/// Every licence the allow-list admits and that has a text here.
pub const LICENSES: &[License] = &[
    License {
        spdx: "Apache-2.0",
        dep5: "Apache-2.0",
        text: Text::Common("Apache-2.0"),
    },
    License {
        spdx: "LGPL-2.1",
        dep5: "LGPL-2.1",
        text: Text::Common("LGPL-2.1"),
    },
    License {
        spdx: "MIT",
        dep5: "Expat",
        text: Text::Full(include_str!("../licenses/Expat.txt")),
    },
    License {
        spdx: "BSD-3-Clause",
        dep5: "BSD-3-clause",
        text: Text::Full(include_str!("../licenses/BSD-3-clause.txt")),
    },
    License {
        spdx: "ISC",
        dep5: "ISC",
        text: Text::Full(include_str!("../licenses/ISC.txt")),
    },
    License {
        spdx: "Zlib",
        dep5: "Zlib",
        text: Text::Full(include_str!("../licenses/Zlib.txt")),
    },
    License {
        spdx: "0BSD",
        dep5: "0BSD",
        text: Text::Full(include_str!("../licenses/0BSD.txt")),
    },
    License {
        spdx: "Unlicense",
        dep5: "Unlicense",
        text: Text::Full(include_str!("../licenses/Unlicense.txt")),
    },
    License {
        spdx: "Apache-2.0 WITH LLVM-exception",
        dep5: "Apache-2.0 with LLVM exception",
        text: Text::Full(include_str!("../licenses/LLVM-exception.txt")),
    },
];

/// The licence with SPDX identifier `spdx`, if this file knows it.
pub fn find(spdx: &str) -> Option<&'static License> {
    LICENSES.iter().find(|l| l.spdx == spdx)
}
