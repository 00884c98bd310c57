//! The server's end of `missive-server admin`: a Unix socket (mode 0600)
//! answering one JSON request line with one JSON answer line
//! ([`missive_runtime::admin`]), removed when the server stops.

use missive_runtime::admin::AdminService;
use missive_tokio::Tokio;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

/// A listening admin socket; dropping it stops answering and removes it.
pub struct AdminSocket {
    path: PathBuf,
    task: tokio::task::JoinHandle<()>,
}

impl AdminSocket {
    /// Listens on `path`: a stale socket left by a server that died is
    /// replaced, a live one (another server answers) is an error. The
    /// socket is made in a private directory beside `path`, given mode
    /// 0600, then moved into place, so nobody else can connect even for a
    /// moment.
    pub fn bind(path: &Path, service: AdminService) -> Result<Self, String> {
        let shown = path.display();
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(format!(
                "{shown}: another server answers on this admin socket"
            ));
        }
        match std::fs::remove_file(path) {
            Ok(()) => tracing::info!(path = %shown, "replaced a stale admin socket"),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("{shown}: {e}")),
        }
        let parent = path.parent().filter(|p| !p.as_os_str().is_empty());
        let parent = parent.unwrap_or(Path::new("."));
        std::fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
        let private = parent.join(format!(".admin.{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&private);
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&private)
            .map_err(|e| format!("{}: {e}", private.display()))?;
        let inside = private.join("s");
        let bound = UnixListener::bind(&inside)
            .and_then(|listener| {
                std::fs::set_permissions(&inside, std::fs::Permissions::from_mode(0o600))?;
                std::fs::rename(&inside, path)?;
                Ok(listener)
            })
            .map_err(|e| format!("{shown}: {e}"));
        let _ = std::fs::remove_dir_all(&private);
        let listener = bound?;
        tracing::info!(path = %shown, "admin socket ready");
        let task = tokio::spawn(accept_loop(listener, service));
        Ok(Self {
            path: path.to_owned(),
            task,
        })
    }
}

impl Drop for AdminSocket {
    fn drop(&mut self) {
        self.task.abort();
        let _ = std::fs::remove_file(&self.path);
    }
}

async fn accept_loop(listener: UnixListener, service: AdminService) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(answer_connection(stream, service.clone()));
            }
            Err(e) => {
                tracing::warn!("admin socket: accept failed: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }
}

/// Answers each request line of one connection until it closes.
async fn answer_connection(stream: UnixStream, service: AdminService) {
    let (reader, mut writer) = stream.into_split();
    let mut lines = BufReader::new(reader).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let answer = service.answer_line::<Tokio>(&line).await;
        if writer.write_all(answer.as_bytes()).await.is_err() {
            return;
        }
    }
}
