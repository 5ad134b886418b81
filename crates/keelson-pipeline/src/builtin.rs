//! The catalogue of built-in steps (`uses: keelson/…`): their names and the inputs each takes under
//! `with:`. Only the names and input shapes live here, so that a pipeline is checked before it runs;
//! the steps themselves are implemented outside the engine and wired in by the binary.

/// One input of a built-in step.
#[derive(Debug, Clone, Copy)]
pub struct Input {
    pub name: &'static str,
    pub description: &'static str,
    /// The values a literal (non-expression) value may take; `None` accepts any string.
    pub allowed: Option<&'static [&'static str]>,
    /// Whether a list of values is accepted (passed to the step comma-separated).
    pub list: bool,
}

/// One built-in step.
#[derive(Debug, Clone, Copy)]
pub struct Builtin {
    pub name: &'static str,
    pub description: &'static str,
    pub inputs: &'static [Input],
}

/// Every built-in step.
pub const BUILTINS: &[Builtin] = &[Builtin {
    name: "keelson/scan",
    description: "scan the workspace for secrets, vulnerable dependencies and misconfigurations; \
                  fail the job per policy; store the SARIF report and the SBOM as artifacts",
    inputs: &[
        Input {
            name: "kinds",
            description: "what to scan for (default: all)",
            allowed: Some(&["secrets", "deps", "misconfig"]),
            list: true,
        },
        Input {
            name: "path",
            description: "the directory to scan, relative to the workspace (default `.`)",
            allowed: None,
            list: false,
        },
        Input {
            name: "fail-on",
            description: "fail the step on findings at or above this severity (default `high`)",
            allowed: Some(&["info", "low", "medium", "high", "critical", "never"]),
            list: false,
        },
        Input {
            name: "baseline",
            description: "a baseline file of accepted findings, relative to the workspace",
            allowed: None,
            list: false,
        },
        Input {
            name: "db",
            description: "the advisory database directory (default: Keelson's data dir)",
            allowed: None,
            list: false,
        },
        Input {
            name: "output",
            description: "the workspace directory the reports are written to (default `keelson-scan`)",
            allowed: None,
            list: false,
        },
        Input {
            name: "sbom",
            description: "SBOM format written beside the SARIF report (default `cyclonedx`)",
            allowed: Some(&["cyclonedx", "spdx", "none"]),
            list: false,
        },
    ],
}];

/// The built-in step called `name`.
pub fn find(name: &str) -> Option<&'static Builtin> {
    BUILTINS.iter().find(|b| b.name == name)
}

impl Builtin {
    /// The input called `name`.
    pub fn input(&self, name: &str) -> Option<&'static Input> {
        self.inputs.iter().find(|i| i.name == name)
    }
}
