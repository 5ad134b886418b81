//! Lays a run's pipeline jobs out in stages for the run page's DAG.
//!
//! A job's stage is 0 when it needs nothing, otherwise 1 + the highest stage of the jobs it
//! needs. Invariants: every job appears in exactly one stage; within a stage jobs keep their
//! given order; a `needs` entry naming no job of the run is ignored; a dependency cycle (which
//! validated pipelines never have, but stored data might) does not loop: the edge closing the
//! cycle is ignored.

use std::collections::HashMap;

/// Stage numbers of `jobs` (name, needs), in the given order.
pub fn stage_numbers<S: AsRef<str>>(jobs: &[(S, Vec<S>)]) -> Vec<usize> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Visiting,
        Done(usize),
    }
    let mut index_of: HashMap<&str, usize> = HashMap::with_capacity(jobs.len());
    for (index, (name, _)) in jobs.iter().enumerate() {
        index_of.entry(name.as_ref()).or_insert(index);
    }
    let mut marks = vec![Mark::New; jobs.len()];
    for start in 0..jobs.len() {
        // Depth-first without recursion: (job, next need to look at, highest stage seen).
        let mut stack: Vec<(usize, usize, Option<usize>)> = vec![(start, 0, None)];
        while let Some(&(job, next, highest)) = stack.last() {
            if let Mark::Done(_) = marks[job] {
                stack.pop();
                continue;
            }
            marks[job] = Mark::Visiting;
            let needs = &jobs[job].1;
            let top = stack.len() - 1;
            if let Some(need) = needs.get(next) {
                stack[top].1 += 1;
                match index_of.get(need.as_ref()).map(|&need| (need, marks[need])) {
                    Some((_, Mark::Done(stage))) => {
                        stack[top].2 = Some(highest.map_or(stage, |h| h.max(stage)));
                    }
                    Some((need, Mark::New)) => stack.push((need, 0, None)),
                    // A cycle or an unknown name: ignore the edge.
                    Some((_, Mark::Visiting)) | None => {}
                }
                continue;
            }
            let stage = highest.map_or(0, |h| h + 1);
            marks[job] = Mark::Done(stage);
            stack.pop();
            if let Some((_, _, parent_highest)) = stack.last_mut() {
                *parent_highest = Some(parent_highest.map_or(stage, |h| h.max(stage)));
            }
        }
    }
    marks
        .into_iter()
        .map(|mark| match mark {
            Mark::Done(stage) => stage,
            Mark::New | Mark::Visiting => 0,
        })
        .collect()
}

/// The indexes of `jobs` grouped by stage, lowest stage first, each group in the given order.
pub fn stages<S: AsRef<str>>(jobs: &[(S, Vec<S>)]) -> Vec<Vec<usize>> {
    let numbers = stage_numbers(jobs);
    let count = numbers.iter().max().map_or(0, |highest| highest + 1);
    let mut out = vec![Vec::new(); count];
    for (index, stage) in numbers.into_iter().enumerate() {
        out[stage].push(index);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::stages;

    /// Jobs as (name, needs).
    type Jobs<'a> = &'a [(&'a str, &'a [&'a str])];
    /// Stages of job names.
    type Stages<'a> = &'a [&'a [&'a str]];

    fn check(jobs: Jobs<'_>, expected: Stages<'_>) {
        let jobs: Vec<(&str, Vec<&str>)> = jobs
            .iter()
            .map(|(name, needs)| (*name, needs.to_vec()))
            .collect();
        let got: Vec<Vec<&str>> = stages(&jobs)
            .into_iter()
            .map(|stage| stage.into_iter().map(|index| jobs[index].0).collect())
            .collect();
        assert_eq!(got, expected, "jobs {jobs:?}");
    }

    #[test]
    fn stages_follow_the_longest_chain_of_needs() {
        let cases: &[(Jobs<'_>, Stages<'_>)] = &[
            (&[], &[]),
            (&[("build", &[])], &[&["build"]]),
            (&[("a", &[]), ("b", &[])], &[&["a", "b"]]),
            (
                &[("build", &[]), ("test", &["build"]), ("deploy", &["test"])],
                &[&["build"], &["test"], &["deploy"]],
            ),
            // A diamond.
            (
                &[("a", &[]), ("b", &["a"]), ("c", &["a"]), ("d", &["b", "c"])],
                &[&["a"], &["b", "c"], &["d"]],
            ),
            // 1 + the highest stage of the needs, not of the first need.
            (
                &[("a", &[]), ("b", &["a"]), ("c", &["a", "b"])],
                &[&["a"], &["b"], &["c"]],
            ),
            // Needs declared after the job.
            (
                &[("deploy", &["test"]), ("test", &["build"]), ("build", &[])],
                &[&["build"], &["test"], &["deploy"]],
            ),
            // Unknown names are ignored.
            (
                &[("a", &["ghost"]), ("b", &["a", "ghost"])],
                &[&["a"], &["b"]],
            ),
            // Cycles terminate; every job still gets a stage.
            (&[("a", &["b"]), ("b", &["a"])], &[&["b"], &["a"]]),
            (&[("a", &["a"])], &[&["a"]]),
        ];
        for (jobs, expected) in cases {
            check(jobs, expected);
        }
    }

    #[test]
    fn a_long_chain_does_not_overflow_the_stack() {
        let names: Vec<String> = (0..20_000).map(|i| format!("j{i}")).collect();
        let jobs: Vec<(&str, Vec<&str>)> = names
            .iter()
            .enumerate()
            .map(|(i, name)| {
                let needs = if i == 0 {
                    vec![]
                } else {
                    vec![names[i - 1].as_str()]
                };
                (name.as_str(), needs)
            })
            .rev()
            .collect();
        let grouped = stages(&jobs);
        assert_eq!(grouped.len(), 20_000);
        assert_eq!(jobs[grouped[19_999][0]].0, "j19999");
    }
}
