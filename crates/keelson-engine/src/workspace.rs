//! Per-job workspaces: a fresh copy of the project's files for every job, made with reflinks
//! (FICLONE) where the file system supports them and plain copies otherwise — never hard links,
//! so nothing a job does can change the user's tree.

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use crate::files::{check_relative, create_new_file};

/// Errors creating or removing a workspace; each names the path and what went wrong.
#[derive(Debug, thiserror::Error)]
pub enum WorkspaceError {
    #[error("workspace destination {} already exists and is not empty", path.display())]
    DestNotEmpty { path: PathBuf },
    #[error("invalid workspace file path {}: {reason}", path.display())]
    InvalidPath { path: PathBuf, reason: &'static str },
    #[error("{action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

fn io_err<'a>(
    action: &'static str,
    path: &'a Path,
) -> impl FnOnce(io::Error) -> WorkspaceError + 'a {
    move |source| WorkspaceError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

/// How the regular files of a workspace were copied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CopyMethod {
    /// Every non-empty regular file was cloned (copy-on-write, no data copied).
    Reflink,
    /// At least one file was copied byte by byte (or there was nothing to clone).
    Copy,
}

/// What [`create_workspace`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkspaceStats {
    /// Regular files and symlinks created.
    pub files: usize,
    /// Bytes of regular-file content.
    pub bytes: u64,
    pub method: CopyMethod,
}

/// Below this many files a single thread does the copy.
const PARALLEL_THRESHOLD: usize = 256;
/// Files a worker takes at a time.
const BATCH: usize = 32;

#[derive(Default)]
struct Tally {
    files: usize,
    bytes: u64,
    cloned: usize,
    copied: usize,
}

struct Shared<'a> {
    source_root: &'a Path,
    dest: &'a Path,
    files: &'a [PathBuf],
    next: AtomicUsize,
    failed: AtomicBool,
    reflink: AtomicBool,
    error: Mutex<Option<WorkspaceError>>,
}

/// Creates `dest` (must not exist or be empty) containing `files` from `source_root`: regular
/// files cloned with FICLONE where the file system supports it, else copied (copy_file_range);
/// permission bits kept; symlinks recreated as symlinks; directories created. Never hard links.
/// Never writes under `source_root`. Files that vanished from the source since they were listed
/// are skipped. Large trees are copied by several threads.
pub fn create_workspace(
    source_root: &Path,
    files: &[PathBuf],
    dest: &Path,
) -> Result<WorkspaceStats, WorkspaceError> {
    for f in files {
        check_relative(f).map_err(|reason| WorkspaceError::InvalidPath {
            path: f.clone(),
            reason,
        })?;
    }
    prepare_dest(dest)?;

    // Directories first, parents before children (a path sorts before its descendants), so no
    // file or symlink can ever be created where a directory is needed.
    let mut dirs = BTreeSet::new();
    for f in files {
        for dir in f.ancestors().skip(1) {
            if dir.as_os_str().is_empty() || !dirs.insert(dir) {
                break;
            }
        }
    }
    for dir in dirs {
        let abs = dest.join(dir);
        match fs::create_dir(&abs) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io_err("cannot create directory", &abs)(e)),
        }
    }

    let shared = Shared {
        source_root,
        dest,
        files,
        next: AtomicUsize::new(0),
        failed: AtomicBool::new(false),
        reflink: AtomicBool::new(true),
        error: Mutex::new(None),
    };
    let threads = if files.len() < PARALLEL_THRESHOLD {
        1
    } else {
        std::thread::available_parallelism()
            .map_or(2, |n| n.get())
            .clamp(2, 8)
    };
    let tally = if threads == 1 {
        worker(&shared)
    } else {
        std::thread::scope(|scope| {
            let handles: Vec<_> = (0..threads)
                .map(|_| scope.spawn(|| worker(&shared)))
                .collect();
            let mut total = Tally::default();
            for h in handles {
                // A worker only panics on a bug; propagate it.
                let t = h.join().unwrap_or_else(|p| std::panic::resume_unwind(p));
                total.files += t.files;
                total.bytes += t.bytes;
                total.cloned += t.cloned;
                total.copied += t.copied;
            }
            total
        })
    };
    if let Some(err) = shared.error.into_inner().unwrap_or_else(|p| p.into_inner()) {
        return Err(err);
    }
    let method = if tally.cloned > 0 && tally.copied == 0 {
        CopyMethod::Reflink
    } else {
        CopyMethod::Copy
    };
    Ok(WorkspaceStats {
        files: tally.files,
        bytes: tally.bytes,
        method,
    })
}

fn prepare_dest(dest: &Path) -> Result<(), WorkspaceError> {
    match fs::symlink_metadata(dest) {
        Ok(m) if m.is_dir() => {
            let mut entries = fs::read_dir(dest).map_err(io_err("cannot read", dest))?;
            if entries.next().is_some() {
                return Err(WorkspaceError::DestNotEmpty {
                    path: dest.to_path_buf(),
                });
            }
            Ok(())
        }
        Ok(_) => Err(WorkspaceError::DestNotEmpty {
            path: dest.to_path_buf(),
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            fs::create_dir_all(dest).map_err(io_err("cannot create directory", dest))
        }
        Err(e) => Err(io_err("cannot read", dest)(e)),
    }
}

fn worker(shared: &Shared<'_>) -> Tally {
    let mut tally = Tally::default();
    loop {
        if shared.failed.load(Ordering::Relaxed) {
            break;
        }
        let start = shared.next.fetch_add(BATCH, Ordering::Relaxed);
        if start >= shared.files.len() {
            break;
        }
        let end = (start + BATCH).min(shared.files.len());
        for rel in &shared.files[start..end] {
            if let Err(e) = copy_one(shared, rel, &mut tally) {
                shared.failed.store(true, Ordering::Relaxed);
                let mut slot = shared.error.lock().unwrap_or_else(|p| p.into_inner());
                slot.get_or_insert(e);
                return tally;
            }
        }
    }
    tally
}

fn copy_one(shared: &Shared<'_>, rel: &Path, tally: &mut Tally) -> Result<(), WorkspaceError> {
    let src = shared.source_root.join(rel);
    let dst = shared.dest.join(rel);
    let meta = match fs::symlink_metadata(&src) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_err("cannot read", &src)(e)),
    };
    let ft = meta.file_type();
    if ft.is_symlink() {
        let target = match fs::read_link(&src) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io_err("cannot read link", &src)(e)),
        };
        std::os::unix::fs::symlink(&target, &dst).map_err(io_err("cannot create symlink", &dst))?;
        tally.files += 1;
    } else if ft.is_dir() {
        match fs::create_dir(&dst) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io_err("cannot create directory", &dst)(e)),
        }
    } else if ft.is_file() {
        let mode = meta.permissions().mode() & 0o777;
        let mut input = match File::open(&src) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io_err("cannot open", &src)(e)),
        };
        let mut output = create_new_file(&dst, mode).map_err(io_err("cannot create", &dst))?;
        let len = meta.len();
        if len > 0 {
            if clone_into(&input, &output, &shared.reflink) {
                tally.cloned += 1;
            } else {
                io::copy(&mut input, &mut output).map_err(io_err("cannot copy", &src))?;
                tally.copied += 1;
            }
        }
        // The umask may have dropped bits at creation.
        output
            .set_permissions(fs::Permissions::from_mode(mode))
            .map_err(io_err("cannot set permissions of", &dst))?;
        tally.files += 1;
        tally.bytes += len;
    }
    // Sockets, FIFOs and devices are not part of a workspace.
    Ok(())
}

/// Clones `input`'s content into the empty `output` with FICLONE; false when the file system
/// cannot (then later files skip the attempt).
pub(crate) fn clone_into(input: &File, output: &File, enabled: &AtomicBool) -> bool {
    if !enabled.load(Ordering::Relaxed) {
        return false;
    }
    // SAFETY: both descriptors are open for the duration of the call; FICLONE takes the source
    // descriptor as its argument and does not retain it.
    let rc = unsafe { libc::ioctl(output.as_raw_fd(), libc::FICLONE, input.as_raw_fd()) };
    if rc == 0 {
        return true;
    }
    let errno = io::Error::last_os_error().raw_os_error().unwrap_or(0);
    if matches!(
        errno,
        libc::EOPNOTSUPP | libc::EXDEV | libc::EINVAL | libc::ENOTTY | libc::ENOSYS
    ) {
        enabled.store(false, Ordering::Relaxed);
    }
    false
}

/// Removes a workspace directory tree, making read-only directories writable first so the
/// removal succeeds. A missing directory is not an error. Symlinks are removed, never followed.
pub fn remove_workspace(path: &Path) -> Result<(), WorkspaceError> {
    match fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_err("cannot read", path)(e)),
        Ok(m) if !m.is_dir() => {
            return Err(WorkspaceError::InvalidPath {
                path: path.to_path_buf(),
                reason: "not a directory",
            });
        }
        Ok(_) => {}
    }
    if path.parent().is_none() {
        return Err(WorkspaceError::InvalidPath {
            path: path.to_path_buf(),
            reason: "refusing to remove a root",
        });
    }
    match fs::remove_dir_all(path) {
        Ok(()) => return Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(_) => {}
    }
    make_dirs_writable(path)?;
    match fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err("cannot remove", path)(e)),
    }
}

/// Adds owner rwx to `dir` and every directory below it (not through symlinks).
fn make_dirs_writable(dir: &Path) -> Result<(), WorkspaceError> {
    let meta = match fs::symlink_metadata(dir) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_err("cannot read", dir)(e)),
    };
    if !meta.is_dir() {
        return Ok(());
    }
    let mode = meta.permissions().mode();
    if mode & 0o700 != 0o700 {
        fs::set_permissions(dir, fs::Permissions::from_mode(mode | 0o700))
            .map_err(io_err("cannot make writable", dir))?;
    }
    let entries = fs::read_dir(dir).map_err(io_err("cannot read", dir))?;
    for entry in entries {
        let entry = entry.map_err(io_err("cannot read", dir))?;
        if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            make_dirs_writable(&entry.path())?;
        }
    }
    Ok(())
}
