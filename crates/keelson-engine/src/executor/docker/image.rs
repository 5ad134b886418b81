//! Images: checking an image is present locally (nothing is pulled) and building the busybox test
//! image from the host's static busybox.

use bollard::Docker;
use bollard::query_parameters::BuildImageOptionsBuilder;
use futures_util::StreamExt;

use super::DockerError;
use super::cleanup::is_not_found;

/// Where the static busybox binary is taken from (Debian's `busybox-static`).
pub const HOST_BUSYBOX: &str = "/bin/busybox";

const BUSYBOX_DOCKERFILE: &str = r#"FROM scratch
COPY busybox /bin/busybox
RUN ["/bin/busybox", "--install", "-s", "/bin"]
RUN ["/bin/busybox", "mkdir", "-p", "/tmp", "/root", "/etc", "/www"]
RUN ["/bin/busybox", "chmod", "1777", "/tmp"]
"#;

/// Fails with [`DockerError::ImageMissing`] unless `image` is present in the engine.
pub(super) async fn require_local(docker: &Docker, image: &str) -> Result<(), DockerError> {
    match docker.inspect_image(image).await {
        Ok(_) => Ok(()),
        Err(err) if is_not_found(&err) => Err(DockerError::ImageMissing {
            image: image.to_owned(),
        }),
        Err(err) => Err(DockerError::api(format!("inspect image {image}"), err)),
    }
}

/// Builds `tag`: `FROM scratch` with the host's [`HOST_BUSYBOX`] (a static binary) installed
/// with all its applets as symlinks in `/bin`, plus empty `/tmp` (mode 1777), `/root`, `/etc` and
/// `/www`. The build context is a tar made in memory and sent through the Engine API; no registry
/// is involved. This is how tests (and offline users) get a small image with `sh`, `nc`, `httpd`.
pub async fn build_busybox_test_image(docker: &Docker, tag: &str) -> Result<(), DockerError> {
    let build_error = |message: String| DockerError::Build {
        tag: tag.to_owned(),
        message,
    };
    let busybox = std::fs::read(HOST_BUSYBOX)
        .map_err(|e| build_error(format!("reading {HOST_BUSYBOX}: {e}")))?;
    let context = tar_context(&[
        ("Dockerfile", BUSYBOX_DOCKERFILE.as_bytes(), 0o644),
        ("busybox", &busybox, 0o755),
    ])
    .map_err(|e| build_error(format!("making the build context: {e}")))?;
    let options = BuildImageOptionsBuilder::default()
        .dockerfile("Dockerfile")
        .t(tag)
        .rm(true)
        .forcerm(true)
        .build();
    let mut progress = docker.build_image(options, None, Some(bollard::body_full(context.into())));
    while let Some(item) = progress.next().await {
        item.map_err(|e| build_error(e.to_string()))?;
    }
    require_local(docker, tag).await
}

/// A tar archive of `(name, contents, mode)` files.
fn tar_context(files: &[(&str, &[u8], u32)]) -> std::io::Result<Vec<u8>> {
    let mut builder = tar::Builder::new(Vec::new());
    for (name, contents, mode) in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(contents.len() as u64);
        header.set_mode(*mode);
        header.set_mtime(0);
        header.set_cksum();
        builder.append_data(&mut header, name, *contents)?;
    }
    builder.into_inner()
}
