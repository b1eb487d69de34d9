//! Git for Xyn: the node keeps bare repositories under `<data-dir>/repos/` and offers the
//! `git.*` actions over them. Commits are authored by the run's actor and carry the run in a
//! `Xyn-Run:` trailer; diffs are step artifacts. Repositories are named, never addressed by
//! path, so event data cannot make an action read or write elsewhere on the host; `git.clone`
//! reads local paths only under the configured clone sources.

pub mod repo;

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use serde_json::{Value, json};
use xyn_actions::{Action, ActionContext, ActionError, ActionOutput};

pub use repo::{GitError, Limits, Provenance, Repos};

impl From<GitError> for ActionError {
    fn from(e: GitError) -> Self {
        ActionError::new(e.code, e.message, e.code == repo::codes::FAILED)
    }
}

/// Every Git action over `repos`.
pub fn actions(repos: Arc<Repos>) -> Vec<Arc<dyn Action>> {
    Op::ALL
        .iter()
        .map(|op| {
            Arc::new(GitAction {
                op: *op,
                repos: repos.clone(),
            }) as Arc<dyn Action>
        })
        .collect()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Init,
    Commit,
    Diff,
    Log,
    Checkout,
    Clone,
}

impl Op {
    const ALL: [Op; 6] = [
        Op::Init,
        Op::Commit,
        Op::Diff,
        Op::Log,
        Op::Checkout,
        Op::Clone,
    ];
}

struct GitAction {
    op: Op,
    repos: Arc<Repos>,
}

fn repo_schema() -> Value {
    json!({"type": "string", "pattern": "^[A-Za-z0-9_][A-Za-z0-9._-]{0,63}$"})
}

fn rev_schema() -> Value {
    json!({"type": "string", "minLength": 1, "maxLength": 256})
}

fn str_of<'a>(input: &'a Value, key: &str) -> Option<&'a str> {
    input.get(key).and_then(Value::as_str)
}

fn done(output: Value) -> ActionOutput {
    ActionOutput {
        output,
        bytes_in: 0,
        bytes_out: 0,
        records: Vec::new(),
    }
}

#[async_trait]
impl Action for GitAction {
    fn name(&self) -> &str {
        match self.op {
            Op::Init => "git.repo.init",
            Op::Commit => "git.commit",
            Op::Diff => "git.diff",
            Op::Log => "git.log",
            Op::Checkout => "git.checkout",
            Op::Clone => "git.clone",
        }
    }

    fn description(&self) -> &str {
        match self.op {
            Op::Init => "Creates one of the node's Git repositories (bare, branch main).",
            Op::Commit => {
                "Commits files (path -> content, null deletes) to a branch, authored by the run's actor with the run in a Xyn-Run trailer."
            }
            Op::Diff => {
                "The changes between two revisions (default: HEAD and its parent), as a summary and a unified diff artifact."
            }
            Op::Log => {
                "Commits along first parents from a revision, newest first, with their runs."
            }
            Op::Checkout => "The files of a revision (or those under a path), as text.",
            Op::Clone => {
                "Copies another repository of the node (repo:<name>) or a local repository under a configured clone source into a new repository."
            }
        }
    }

    fn input_schema(&self) -> Value {
        let (required, props): (Vec<&str>, Value) = match self.op {
            Op::Init => (vec!["repo"], json!({"repo": repo_schema()})),
            Op::Commit => (
                vec!["repo", "message", "files"],
                json!({
                    "repo": repo_schema(),
                    "message": {"type": "string", "minLength": 1, "maxLength": 65536},
                    "branch": {"type": "string", "minLength": 1, "maxLength": 200},
                    "files": {
                        "type": "object",
                        "minProperties": 1,
                        "additionalProperties": {"type": ["string", "null"]}
                    }
                }),
            ),
            Op::Diff => (
                vec!["repo"],
                json!({"repo": repo_schema(), "from": rev_schema(), "to": rev_schema()}),
            ),
            Op::Log => (
                vec!["repo"],
                json!({
                    "repo": repo_schema(),
                    "rev": rev_schema(),
                    "limit": {"type": "integer", "minimum": 1, "maximum": 1000}
                }),
            ),
            Op::Checkout => (
                vec!["repo"],
                json!({
                    "repo": repo_schema(),
                    "rev": rev_schema(),
                    "path": {"type": "string", "minLength": 1, "maxLength": 1024}
                }),
            ),
            Op::Clone => (
                vec!["source", "repo"],
                json!({
                    "source": {"type": "string", "minLength": 1, "maxLength": 4096},
                    "repo": repo_schema()
                }),
            ),
        };
        json!({
            "type": "object",
            "additionalProperties": false,
            "required": required,
            "properties": props,
        })
    }

    fn output_schema(&self) -> Value {
        json!({"type": "object", "required": ["repo"], "properties": {"repo": {"type": "string"}}})
    }

    async fn execute(
        &self,
        ctx: &ActionContext,
        input: Value,
    ) -> Result<ActionOutput, ActionError> {
        let repos = self.repos.clone();
        let op = self.op;
        let who = Provenance {
            actor: ctx.actor.clone(),
            run_id: ctx.run_id.map(|r| r.to_string()),
            step_id: ctx.step_id.map(|s| s.to_string()),
        };
        // Repository work is file I/O and hashing: off the async threads.
        let result = tokio::task::spawn_blocking(move || run(op, &repos, &input, &who))
            .await
            .map_err(|e| ActionError::new(repo::codes::FAILED, format!("git: {e}"), false))??;
        match result {
            Done::Value(v) => Ok(done(v)),
            Done::Diff(mut v, text) => {
                let name = format!(
                    "{}.diff",
                    v["repo"].as_str().unwrap_or("repo").replace('/', "_")
                );
                let art = ctx
                    .artifacts
                    .put(
                        &name,
                        "diff",
                        "text/x-diff; charset=utf-8",
                        text.into_bytes(),
                        json!({"from": v["from"], "to": v["to"]}),
                    )
                    .await
                    .map_err(ActionError::from)?;
                v["artifact_id"] = json!(art.artifact_id.to_string());
                Ok(done(v))
            }
        }
    }
}

enum Done {
    Value(Value),
    Diff(Value, String),
}

fn run(op: Op, repos: &Repos, input: &Value, who: &Provenance) -> Result<Done, ActionError> {
    let repo = str_of(input, "repo").unwrap_or_default();
    Ok(match op {
        Op::Init => Done::Value(repos.init(repo)?),
        Op::Commit => {
            let files: BTreeMap<String, Option<String>> = input
                .get("files")
                .and_then(Value::as_object)
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| (k.clone(), v.as_str().map(str::to_string)))
                        .collect()
                })
                .unwrap_or_default();
            Done::Value(repos.commit(
                repo,
                str_of(input, "branch"),
                str_of(input, "message").unwrap_or_default(),
                &files,
                who,
            )?)
        }
        Op::Diff => {
            let (v, text) = repos.diff(repo, str_of(input, "from"), str_of(input, "to"))?;
            Done::Diff(v, text)
        }
        Op::Log => Done::Value(repos.log(
            repo,
            str_of(input, "rev"),
            input.get("limit").and_then(Value::as_u64).unwrap_or(20) as usize,
        )?),
        Op::Checkout => {
            Done::Value(repos.checkout(repo, str_of(input, "rev"), str_of(input, "path"))?)
        }
        Op::Clone => {
            Done::Value(repos.clone_from(str_of(input, "source").unwrap_or_default(), repo)?)
        }
    })
}
