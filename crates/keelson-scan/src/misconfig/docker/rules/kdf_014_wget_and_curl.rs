//! KDF-014: a stage using both wget and curl.

use super::{Hit, Rule, run_commands};
use crate::finding::Severity;
use crate::misconfig::RuleInfo;
use crate::misconfig::docker::parse::{Dockerfile, Keyword};

pub(super) const RULE: Rule = Rule {
    info: RuleInfo {
        id: "KDF-014",
        upstream_id: Some("DS-0014"),
        title: "Both wget and curl used",
        severity: Severity::Low,
        rationale: "Using two download tools for the same job means two tools installed, patched and \
                    audited where one would do.",
        fix: "Pick one of wget or curl and use it for every download in the stage.",
    },
    check,
};

fn check(file: &Dockerfile) -> Vec<Hit> {
    let mut hits = Vec::new();
    for stage in &file.stages {
        let mut first_use: [Option<usize>; 2] = [None, None];
        for index in stage.instructions.clone() {
            let instruction = &file.instructions[index];
            if instruction.keyword != Keyword::Run {
                continue;
            }
            for command in run_commands(instruction) {
                let tool = match command.program() {
                    Some("wget") => 0,
                    Some("curl") => 1,
                    _ => continue,
                };
                first_use[tool].get_or_insert(index);
            }
        }
        if let [Some(wget), Some(curl)] = first_use {
            // Report where the second tool first appears.
            let (index, detail) = if wget > curl {
                (wget, "wget after curl")
            } else {
                (curl, "curl after wget")
            };
            hits.push(Hit::with(index, detail));
        }
    }
    hits
}

#[cfg(test)]
mod tests {
    use super::RULE;
    use crate::misconfig::docker::rules::testing::lines;

    #[test]
    fn per_stage() {
        let text = "FROM a:1\nRUN curl -O x\nRUN wget y && curl z\nFROM b:1\nRUN wget q\n";
        assert_eq!(lines(&RULE, text), vec![3]);
        assert!(lines(&RULE, "FROM a:1\nRUN curl x\nFROM b:1\nRUN wget y\n").is_empty());
    }
}
