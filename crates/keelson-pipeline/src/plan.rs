//! Planning: matrix expansion, job selection (`keelson run build` runs `build` and what it needs)
//! and a topological order. The plan is what the engine schedules.

use std::collections::{BTreeSet, HashSet};

use indexmap::IndexMap;
use serde_json::Value;

use crate::deploy::{DeployConfig, DeployJob};
use crate::expr;
use crate::model::{Job, Matrix, Pipeline};

/// One concrete job to run: a job, or one combination of a matrix job.
#[derive(Clone, Debug, PartialEq)]
pub struct PlannedJob {
    /// Display id: the job id, plus the matrix values for matrix jobs (`test (linux, 1.80)`).
    pub id: String,
    /// The job's key in the pipeline file.
    pub job_id: String,
    /// This combination's matrix values (empty for non-matrix jobs).
    pub matrix: IndexMap<String, Value>,
    /// Indices into [`Plan::jobs`] of the planned jobs this one waits for.
    pub needs: Vec<usize>,
    /// For a `deploy:` job, what it deploys (against [`Plan::deploy`]); `None` for step jobs.
    pub deploy: Option<DeployJob>,
}

/// The jobs to run, in a topological order (every job after all it needs).
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Plan {
    pub jobs: Vec<PlannedJob>,
    /// The pipeline's `deploy:` block (services and environments), when it has one.
    pub deploy: Option<DeployConfig>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PlanError {
    #[error("no job named `{name}`{hint}")]
    UnknownJob { name: String, hint: String },
    #[error("job `{job}` expands to more than {limit} matrix combinations")]
    MatrixTooLarge { job: String, limit: usize },
}

/// Largest matrix a job may expand to.
pub const MATRIX_LIMIT: usize = 256;

impl Plan {
    /// Plans `selected` jobs (by job id; all when empty) and everything they need.
    /// `pipeline` must be valid (no cycles, no unknown needs).
    pub fn new(pipeline: &Pipeline, selected: &[String]) -> Result<Plan, PlanError> {
        let mut wanted: BTreeSet<usize> = BTreeSet::new();
        let mut queue: Vec<usize> = Vec::new();
        if selected.is_empty() {
            queue.extend(0..pipeline.jobs.len());
        }
        for name in selected {
            let Some(index) = pipeline.jobs.get_index_of(name) else {
                let hint =
                    crate::diag::did_you_mean(name, pipeline.jobs.keys().map(String::as_str))
                        .map(|h| format!("; {h}"))
                        .unwrap_or_default();
                return Err(PlanError::UnknownJob {
                    name: name.clone(),
                    hint,
                });
            };
            queue.push(index);
        }
        while let Some(index) = queue.pop() {
            if wanted.insert(index) {
                for need in &pipeline.jobs[index].needs {
                    if let Some(n) = pipeline.jobs.get_index_of(&need.value) {
                        queue.push(n);
                    }
                }
            }
        }
        // Topological order, stable by file order.
        let mut order: Vec<usize> = Vec::new();
        let mut placed: HashSet<usize> = HashSet::new();
        while order.len() < wanted.len() {
            let before = order.len();
            for &index in &wanted {
                if placed.contains(&index) {
                    continue;
                }
                let ready = pipeline.jobs[index].needs.iter().all(|need| {
                    pipeline
                        .jobs
                        .get_index_of(&need.value)
                        .is_none_or(|n| placed.contains(&n))
                });
                if ready {
                    placed.insert(index);
                    order.push(index);
                }
            }
            if order.len() == before {
                break; // a cycle: validation reports it; plan what can be planned
            }
        }
        let mut plan = Plan {
            jobs: Vec::new(),
            deploy: pipeline.deploy.clone(),
        };
        let mut expansions: IndexMap<&str, Vec<usize>> = IndexMap::new();
        for index in order {
            let (job_id, job) = pipeline.jobs.get_index(index).expect("index from the map");
            let needs: Vec<usize> = job
                .needs
                .iter()
                .flat_map(|need| {
                    expansions
                        .get(need.value.as_str())
                        .cloned()
                        .unwrap_or_default()
                })
                .collect();
            let combinations = match &job.matrix {
                Some(matrix) => expand_matrix(matrix).ok_or_else(|| PlanError::MatrixTooLarge {
                    job: job_id.clone(),
                    limit: MATRIX_LIMIT,
                })?,
                None => vec![IndexMap::new()],
            };
            let mut indices = Vec::new();
            for matrix in combinations {
                indices.push(plan.jobs.len());
                plan.jobs.push(PlannedJob {
                    id: display_id(job, &matrix),
                    job_id: job_id.clone(),
                    matrix,
                    needs: needs.clone(),
                    deploy: job.deploy.clone(),
                });
            }
            expansions.insert(job_id, indices);
        }
        Ok(plan)
    }

    /// Indices of the planned jobs that come from job `job_id`.
    pub fn expansions_of<'a>(&'a self, job_id: &'a str) -> impl Iterator<Item = usize> + 'a {
        self.jobs
            .iter()
            .enumerate()
            .filter(move |(_, j)| j.job_id == job_id)
            .map(|(i, _)| i)
    }
}

fn display_id(job: &Job, matrix: &IndexMap<String, Value>) -> String {
    if matrix.is_empty() {
        return job.id.clone();
    }
    let values: Vec<String> = matrix.values().map(expr::to_text).collect();
    format!("{} ({})", job.id, values.join(", "))
}

/// Expands a matrix the way GitHub Actions does: the product of the axes, minus combinations that
/// match an `exclude` entry, then each `include` entry either extends every combination it does not
/// contradict (adding keys that are not axes) or, when it extends none, becomes a combination of its
/// own. `None` when larger than [`MATRIX_LIMIT`].
pub fn expand_matrix(matrix: &Matrix) -> Option<Vec<IndexMap<String, Value>>> {
    let mut combinations: Vec<IndexMap<String, Value>> = vec![IndexMap::new()];
    if matrix.axes.is_empty() {
        combinations.clear();
    }
    for (axis, values) in &matrix.axes {
        let mut next = Vec::with_capacity(combinations.len() * values.len());
        for combination in &combinations {
            for value in values {
                let mut extended = combination.clone();
                extended.insert(axis.clone(), value.clone());
                next.push(extended);
            }
        }
        if next.len() > MATRIX_LIMIT {
            return None;
        }
        combinations = next;
    }
    combinations.retain(|combination| {
        !matrix.exclude.iter().any(|exclude| {
            exclude
                .iter()
                .all(|(key, value)| combination.get(key).is_some_and(|v| v == value))
        })
    });
    let original_len = combinations.len();
    for include in &matrix.include {
        let mut extended_any = false;
        for combination in combinations.iter_mut().take(original_len) {
            let contradicts_axis = include.iter().any(|(key, value)| {
                matrix.axes.contains_key(key) && combination.get(key).is_some_and(|v| v != value)
            });
            if contradicts_axis {
                continue;
            }
            for (key, value) in include {
                combination.insert(key.clone(), value.clone());
            }
            extended_any = true;
        }
        if !extended_any {
            combinations.push(include.clone());
        }
    }
    (combinations.len() <= MATRIX_LIMIT).then_some(combinations)
}
