//! Image builds (`build:` steps) through the Docker Engine API: the context is sent as a tar that
//! honours `.dockerignore`, progress is streamed as step output, and the image is labelled with
//! where it came from (`org.opencontainers.image.*` plus the Keelson run and job).

use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};

use bollard::Docker;
use bollard::query_parameters::{BuildImageOptionsBuilder, TagImageOptionsBuilder};
use futures_util::StreamExt;
use globset::{GlobBuilder, GlobMatcher};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::events::Stream;
use crate::executor::OutputChunk;

/// What to build.
#[derive(Clone, Debug, PartialEq)]
pub struct BuildRequest {
    /// The build context directory on the host.
    pub context: PathBuf,
    /// The Dockerfile, relative to the context.
    pub dockerfile: String,
    pub args: Vec<(String, String)>,
    pub target: Option<String>,
    /// Names to tag the image with; the first is passed to the build.
    pub tags: Vec<String>,
    pub labels: Vec<(String, String)>,
    /// Push every tag after the build, logging in as `keelson` with this token where given.
    pub push: Option<PushAuth>,
}

/// Credentials for pushing to a Keelson (or any token-protected) registry.
#[derive(Clone, PartialEq)]
pub struct PushAuth {
    pub username: String,
    /// `None` for registries that take anonymous pushes.
    pub password: Option<String>,
}

impl std::fmt::Debug for PushAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PushAuth")
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .finish()
    }
}

/// A finished build.
#[derive(Clone, Debug, PartialEq)]
pub struct BuildResult {
    /// `sha256:…` image id.
    pub image_id: String,
    pub tags: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("cannot reach the Docker Engine: {0}")]
    Connect(String),
    #[error("build context {path}: {message}")]
    Context { path: PathBuf, message: String },
    #[error("{0}")]
    Build(String),
    #[error("the build was cancelled")]
    Cancelled,
}

/// Builds images with a Docker Engine.
#[derive(Clone, Debug)]
pub struct DockerBuilder {
    docker: Docker,
}

impl DockerBuilder {
    /// Connects (honouring `DOCKER_HOST`) and negotiates the API version, so that older engines
    /// (API 1.41 in Debian's docker.io) are spoken to in their own version.
    pub async fn connect() -> Result<DockerBuilder, BuildError> {
        let docker = crate::executor::docker::connect_engine()
            .await
            .map_err(|e| BuildError::Connect(e.to_string()))?;
        docker
            .ping()
            .await
            .map_err(|e| BuildError::Connect(e.to_string()))?;
        Ok(DockerBuilder { docker })
    }

    /// Runs a build, sending its progress to `output` as lines.
    pub async fn build(
        &self,
        request: &BuildRequest,
        output: &mpsc::Sender<OutputChunk>,
        cancel: &CancellationToken,
    ) -> Result<BuildResult, BuildError> {
        let context = request.context.clone();
        let dockerfile = request.dockerfile.clone();
        let tar = tokio::task::spawn_blocking(move || context_tar(&context, &dockerfile))
            .await
            .map_err(|e| BuildError::Build(format!("packing the context failed: {e}")))??;
        say(
            output,
            Stream::System,
            &format!("sending build context ({} bytes)", tar.len()),
        )
        .await;
        let args: HashMap<String, String> = request.args.iter().cloned().collect();
        let labels: HashMap<String, String> = request.labels.iter().cloned().collect();
        let mut options = BuildImageOptionsBuilder::new()
            .dockerfile(&request.dockerfile)
            .rm(true)
            .forcerm(true)
            .buildargs(&args)
            .labels(&labels);
        if let Some(first) = request.tags.first() {
            options = options.t(first);
        }
        if let Some(target) = &request.target {
            options = options.target(target);
        }
        let mut stream = self.docker.build_image(
            options.build(),
            None,
            Some(bollard::body_full(bytes::Bytes::from(tar))),
        );
        let mut image_id = None;
        loop {
            let item = tokio::select! {
                item = stream.next() => item,
                _ = cancel.cancelled() => return Err(BuildError::Cancelled),
            };
            let Some(item) = item else { break };
            let info = item.map_err(|e| BuildError::Build(e.to_string()))?;
            if let Some(error) = info.error_detail.and_then(|d| d.message) {
                return Err(BuildError::Build(error));
            }
            if let Some(text) = info.stream {
                say(output, Stream::Stdout, &text).await;
            }
            if let Some(status) = info.status {
                say(output, Stream::Stdout, &format!("{status}\n")).await;
            }
            if let Some(aux) = info.aux
                && let Some(id) = aux.id
            {
                image_id = Some(id);
            }
        }
        let image_id = match image_id {
            Some(id) => id,
            None => {
                let first = request
                    .tags
                    .first()
                    .ok_or_else(|| BuildError::Build("no tag".into()))?;
                let inspected = self.docker.inspect_image(first).await.map_err(|e| {
                    BuildError::Build(format!("the built image cannot be inspected: {e}"))
                })?;
                inspected.id.unwrap_or_default()
            }
        };
        for tag in request.tags.iter().skip(1) {
            let (repo, tag_name) = split_tag(tag);
            let options = TagImageOptionsBuilder::new()
                .repo(repo)
                .tag(tag_name)
                .build();
            self.docker
                .tag_image(&image_id, Some(options))
                .await
                .map_err(|e| BuildError::Build(format!("tagging {tag}: {e}")))?;
        }
        say(
            output,
            Stream::System,
            &format!("built {image_id} as {}", request.tags.join(", ")),
        )
        .await;
        if let Some(auth) = &request.push {
            for tag in &request.tags {
                self.push(tag, auth, output, cancel).await?;
            }
        }
        Ok(BuildResult {
            image_id,
            tags: request.tags.clone(),
        })
    }

    /// Pushes one tag to the registry its name points at.
    async fn push(
        &self,
        tag: &str,
        auth: &PushAuth,
        output: &mpsc::Sender<OutputChunk>,
        cancel: &CancellationToken,
    ) -> Result<(), BuildError> {
        let (repo, tag_name) = split_tag(tag);
        let Some(registry) = registry_host(repo) else {
            return Err(BuildError::Build(format!(
                "cannot push `{tag}`: the name has no registry (write it as HOST:PORT/NAME:TAG)"
            )));
        };
        say(
            output,
            Stream::System,
            &format!("pushing {tag} to {registry}"),
        )
        .await;
        let credentials = bollard::auth::DockerCredentials {
            username: Some(auth.username.clone()),
            password: auth.password.clone(),
            serveraddress: Some(registry.to_owned()),
            ..Default::default()
        };
        let options = bollard::query_parameters::PushImageOptionsBuilder::new()
            .tag(tag_name)
            .build();
        let mut stream = self
            .docker
            .push_image(repo, Some(options), Some(credentials));
        loop {
            let item = tokio::select! {
                item = stream.next() => item,
                _ = cancel.cancelled() => return Err(BuildError::Cancelled),
            };
            let Some(item) = item else { break };
            let info = item.map_err(|e| BuildError::Build(format!("pushing {tag}: {e}")))?;
            if let Some(message) = info.error_detail.and_then(|d| d.message) {
                return Err(BuildError::Build(format!("pushing {tag}: {message}")));
            }
            // Progress ticks are left out; state changes (Pushed, digest, …) are shown.
            if let Some(status) = info.status
                && info.progress_detail.is_none_or(|p| p.current.is_none())
            {
                say(output, Stream::Stdout, &format!("{status}\n")).await;
            }
        }
        say(output, Stream::System, &format!("pushed {tag}")).await;
        Ok(())
    }

    /// The labels of an image (for tests and `keelson` commands).
    pub async fn image_labels(&self, image: &str) -> Result<HashMap<String, String>, BuildError> {
        let inspected = self
            .docker
            .inspect_image(image)
            .await
            .map_err(|e| BuildError::Build(e.to_string()))?;
        Ok(inspected.config.and_then(|c| c.labels).unwrap_or_default())
    }
}

async fn say(output: &mpsc::Sender<OutputChunk>, stream: Stream, text: &str) {
    let mut bytes = text.as_bytes().to_vec();
    if !bytes.ends_with(b"\n") && stream == Stream::System {
        bytes.push(b'\n');
    }
    let _ = output.send(OutputChunk { stream, bytes }).await;
}

/// `repo:tag` → (`repo`, `tag`), with `latest` when there is no tag (a `:` in a registry host
/// port is not a tag).
fn split_tag(name: &str) -> (&str, &str) {
    match name.rsplit_once(':') {
        Some((repo, tag)) if !tag.contains('/') => (repo, tag),
        _ => (name, "latest"),
    }
}

/// The registry host of an image name (`127.0.0.1:5000/app` → `127.0.0.1:5000`): the first
/// component when it has a `.` or `:` or is `localhost`, as Docker decides.
pub fn registry_host(repo: &str) -> Option<&str> {
    let (first, _) = repo.split_once('/')?;
    (first.contains('.') || first.contains(':') || first == "localhost").then_some(first)
}

/// `.dockerignore` rules: patterns matched against paths relative to the context (with `**`,
/// `*` not crossing `/`), `!` exceptions, the last matching line deciding; a pattern matching a
/// directory excludes everything below it.
#[derive(Debug, Default)]
pub struct DockerIgnore {
    rules: Vec<(GlobMatcher, bool)>,
}

impl DockerIgnore {
    pub fn parse(text: &str) -> Result<DockerIgnore, String> {
        let mut rules = Vec::new();
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (pattern, exclude) = match line.strip_prefix('!') {
                Some(rest) => (rest.trim(), false),
                None => (line, true),
            };
            let pattern = clean_pattern(pattern);
            if pattern.is_empty() {
                continue;
            }
            let glob = GlobBuilder::new(&pattern)
                .literal_separator(true)
                .build()
                .map_err(|e| format!("bad pattern `{line}`: {e}"))?;
            rules.push((glob.compile_matcher(), exclude));
        }
        Ok(DockerIgnore { rules })
    }

    /// Whether `path` (relative to the context, `/`-separated) is left out of the context.
    pub fn excludes(&self, path: &str) -> bool {
        let mut excluded = false;
        for (matcher, exclude) in &self.rules {
            let matches = matcher.is_match(path)
                || path
                    .char_indices()
                    .filter(|(_, c)| *c == '/')
                    .any(|(i, _)| matcher.is_match(&path[..i]));
            if matches {
                excluded = *exclude;
            }
        }
        excluded
    }
}

fn clean_pattern(pattern: &str) -> String {
    let parts: Vec<&str> = pattern
        .split('/')
        .filter(|part| !part.is_empty() && *part != ".")
        .collect();
    parts.join("/")
}

/// Packs the build context as a tar, leaving out what `.dockerignore` excludes (the Dockerfile
/// and `.dockerignore` are always sent, as Docker does). Symlinks are stored as links.
pub fn context_tar(context: &Path, dockerfile: &str) -> Result<Vec<u8>, BuildError> {
    let context_error = |message: String| BuildError::Context {
        path: context.to_owned(),
        message,
    };
    if !context.is_dir() {
        return Err(context_error("is not a directory".to_owned()));
    }
    let ignore = match std::fs::read_to_string(context.join(".dockerignore")) {
        Ok(text) => DockerIgnore::parse(&text).map_err(context_error)?,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => DockerIgnore::default(),
        Err(error) => return Err(context_error(format!(".dockerignore: {error}"))),
    };
    if !context.join(dockerfile).is_file() {
        return Err(context_error(format!("no Dockerfile at `{dockerfile}`")));
    }
    let mut builder = tar::Builder::new(Vec::new());
    builder.follow_symlinks(false);
    let mut entries: Vec<PathBuf> = Vec::new();
    for entry in walkdir::WalkDir::new(context)
        .follow_links(false)
        .sort_by_file_name()
    {
        let entry = entry.map_err(|e| context_error(e.to_string()))?;
        let relative = entry.path().strip_prefix(context).unwrap_or(entry.path());
        if relative.as_os_str().is_empty() || entry.file_type().is_dir() {
            continue;
        }
        if relative
            .components()
            .any(|c| !matches!(c, Component::Normal(_)))
        {
            continue;
        }
        let name = relative.to_string_lossy().replace('\\', "/");
        let always = name == dockerfile || name == ".dockerignore";
        if !always && ignore.excludes(&name) {
            continue;
        }
        entries.push(relative.to_path_buf());
    }
    for relative in entries {
        builder
            .append_path_with_name(context.join(&relative), &relative)
            .map_err(|e| context_error(format!("{}: {e}", relative.display())))?;
    }
    builder
        .into_inner()
        .map_err(|e| context_error(e.to_string()))
}

/// Current time as RFC 3339 (UTC), for `org.opencontainers.image.created`.
pub fn rfc3339_now() -> String {
    let seconds = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    keelson_core::time::rfc3339_utc(seconds)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dockerignore_rules() {
        let ignore =
            DockerIgnore::parse("# comment\ntarget\n*.log\n!keep.log\ndocs/**/*.md\n/secret/\n")
                .unwrap();
        for (path, excluded) in [
            ("target/debug/app", true),
            ("src/main.rs", false),
            ("build.log", true),
            ("keep.log", false),
            ("sub/build.log", false),
            ("docs/a/b/readme.md", true),
            ("docs/readme.txt", false),
            ("secret/key", true),
            ("secretive", false),
        ] {
            assert_eq!(ignore.excludes(path), excluded, "{path}");
        }
    }

    #[test]
    fn tags_split_at_the_last_colon_outside_the_host() {
        assert_eq!(split_tag("app:1.2"), ("app", "1.2"));
        assert_eq!(
            split_tag("127.0.0.1:5000/app"),
            ("127.0.0.1:5000/app", "latest")
        );
        assert_eq!(
            split_tag("127.0.0.1:5000/app:v1"),
            ("127.0.0.1:5000/app", "v1")
        );
    }

    #[test]
    fn rfc3339_has_the_right_shape() {
        let now = rfc3339_now();
        assert_eq!(now.len(), 20, "{now}");
        assert!(now.ends_with('Z') && now.as_bytes()[10] == b'T', "{now}");
    }

    #[test]
    fn context_tar_leaves_out_ignored_files_but_keeps_the_dockerfile() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("Dockerfile"), "FROM scratch\n").unwrap();
        std::fs::write(dir.path().join(".dockerignore"), "Dockerfile\nsecret.txt\n").unwrap();
        std::fs::write(dir.path().join("secret.txt"), "s").unwrap();
        std::fs::write(dir.path().join("app.txt"), "a").unwrap();
        let tar = context_tar(dir.path(), "Dockerfile").unwrap();
        let mut archive = tar::Archive::new(&tar[..]);
        let mut names: Vec<String> = archive
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().display().to_string())
            .collect();
        names.sort();
        assert_eq!(names, [".dockerignore", "Dockerfile", "app.txt"]);
    }
}
