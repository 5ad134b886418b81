//! The Dockerfile rules, one file each. A rule is its [`RuleInfo`] and a check function that
//! returns [`Hit`]s (instruction indexes, optionally with a detail); [`super::check`] turns hits
//! into findings, applies suppressions and computes fingerprints.
//!
//! Invariant: checks are pure functions of the parsed file; they never panic on any parse.

mod kdf_001_latest_tag;
mod kdf_002_root_user;
mod kdf_004_port_22;
mod kdf_005_add_instead_of_copy;
mod kdf_006_copy_from_own_stage;
mod kdf_007_multiple_entrypoints;
mod kdf_008_port_out_of_range;
mod kdf_009_relative_workdir;
mod kdf_010_sudo;
mod kdf_011_copy_destination_slash;
mod kdf_012_duplicate_stage_alias;
mod kdf_013_cd_in_run;
mod kdf_014_wget_and_curl;
mod kdf_015_yum_clean;
mod kdf_016_multiple_cmds;
mod kdf_017_update_alone;
mod kdf_019_dnf_clean;
mod kdf_020_zypper_clean;
mod kdf_021_apt_get_yes;
mod kdf_022_maintainer;
mod kdf_023_multiple_healthchecks;
mod kdf_024_dist_upgrade;

use super::parse::{Dockerfile, Instruction, Keyword};
use super::shell::{self, Command};
use crate::misconfig::RuleInfo;

/// One Dockerfile rule.
#[derive(Debug, Clone, Copy)]
pub struct Rule {
    pub info: RuleInfo,
    /// Returns the offending instructions.
    pub check: fn(&Dockerfile) -> Vec<Hit>,
}

/// Where a rule matched: an index into [`Dockerfile::instructions`], and an optional detail for
/// the finding's title (e.g. the port).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hit {
    pub instruction: usize,
    pub detail: Option<String>,
}

impl Hit {
    pub fn at(instruction: usize) -> Hit {
        Hit {
            instruction,
            detail: None,
        }
    }

    pub fn with(instruction: usize, detail: impl Into<String>) -> Hit {
        Hit {
            instruction,
            detail: Some(detail.into()),
        }
    }
}

/// Every Dockerfile rule, in id order.
pub static ALL: &[Rule] = &[
    kdf_001_latest_tag::RULE,
    kdf_002_root_user::RULE,
    kdf_004_port_22::RULE,
    kdf_005_add_instead_of_copy::RULE,
    kdf_006_copy_from_own_stage::RULE,
    kdf_007_multiple_entrypoints::RULE,
    kdf_008_port_out_of_range::RULE,
    kdf_009_relative_workdir::RULE,
    kdf_010_sudo::RULE,
    kdf_011_copy_destination_slash::RULE,
    kdf_012_duplicate_stage_alias::RULE,
    kdf_013_cd_in_run::RULE,
    kdf_014_wget_and_curl::RULE,
    kdf_015_yum_clean::RULE,
    kdf_016_multiple_cmds::RULE,
    kdf_017_update_alone::RULE,
    kdf_019_dnf_clean::RULE,
    kdf_020_zypper_clean::RULE,
    kdf_021_apt_get_yes::RULE,
    kdf_022_maintainer::RULE,
    kdf_023_multiple_healthchecks::RULE,
    kdf_024_dist_upgrade::RULE,
];

/// The instructions with one keyword, with their indexes.
fn with_keyword(
    file: &Dockerfile,
    keyword: Keyword,
) -> impl Iterator<Item = (usize, &Instruction)> {
    file.instructions
        .iter()
        .enumerate()
        .filter(move |(_, instruction)| instruction.keyword == keyword)
}

/// The simple commands of a RUN instruction's script.
fn run_commands(instruction: &Instruction) -> Vec<Command> {
    shell::commands(&instruction.script())
}

/// Whether a RUN mounts a build cache (`--mount=type=cache,…`), which keeps package caches out
/// of the image without a clean step.
fn has_cache_mount(instruction: &Instruction) -> bool {
    instruction.flags.iter().any(|flag| {
        flag.name.eq_ignore_ascii_case("mount")
            && flag
                .value
                .as_deref()
                .is_some_and(|value| value.split(',').any(|part| part == "type=cache"))
    })
}

/// For each stage, every instruction with `keyword` except the last one: only the last takes
/// effect, the earlier ones are dead code.
fn overridden_in_stage(file: &Dockerfile, keyword: Keyword) -> Vec<Hit> {
    let mut hits = Vec::new();
    for stage in &file.stages {
        let positions: Vec<usize> = stage
            .instructions
            .clone()
            .filter(|&index| file.instructions[index].keyword == keyword)
            .collect();
        if let Some((_last, earlier)) = positions.split_last() {
            for (number, &index) in earlier.iter().enumerate() {
                let detail = format!(
                    "{} of {} in {}",
                    number + 1,
                    positions.len(),
                    stage.describe()
                );
                hits.push(Hit::with(index, detail));
            }
        }
    }
    hits
}

/// RUNs that install with a package manager and do not clean its cache afterwards in the same
/// RUN. `programs` are the package manager's names, `installs` its install subcommands, and
/// `is_clean` recognises a command that empties the cache.
fn installs_without_clean(
    file: &Dockerfile,
    programs: &[&str],
    installs: &[&str],
    is_clean: fn(&Command) -> bool,
) -> Vec<Hit> {
    let mut hits = Vec::new();
    for (index, run) in with_keyword(file, Keyword::Run) {
        if has_cache_mount(run) {
            continue;
        }
        let commands = run_commands(run);
        let last_install = commands.iter().rposition(|command| {
            command
                .program()
                .is_some_and(|program| programs.contains(&program))
                && command
                    .subcommand(&[])
                    .is_some_and(|subcommand| installs.contains(&subcommand))
        });
        if let Some(last_install) = last_install
            && !commands[last_install..].iter().any(is_clean)
        {
            hits.push(Hit::at(index));
        }
    }
    hits
}

/// `rm -rf <dir>` (or `rm -r`, `rm -fr`) of a cache directory or something below it.
fn removes_directory(command: &Command, directory: &str) -> bool {
    command.program() == Some("rm")
        && command.arguments().iter().any(|argument| {
            let argument = argument.trim_end_matches('*').trim_end_matches('/');
            argument == directory || argument.starts_with(&format!("{directory}/"))
        })
}

#[cfg(test)]
pub(crate) mod testing {
    //! Helpers for the rules' unit tests.
    use super::Rule;
    use crate::misconfig::docker::parse::parse;

    /// The 1-based lines a rule reports for a Dockerfile.
    pub fn lines(rule: &Rule, text: &str) -> Vec<usize> {
        let file = parse(text).unwrap_or_else(|errors| panic!("parse failed: {errors:?}"));
        (rule.check)(&file)
            .into_iter()
            .map(|hit| file.instructions[hit.instruction].line)
            .collect()
    }
}
