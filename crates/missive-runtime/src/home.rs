//! The client's home directory: one sub-directory per user holding the
//! private key and the client state.
//!
//! ```text
//! HOME/                 (mode 0700)
//!   alice/              (mode 0700)
//!     key.pem           PKCS#8 PEM private key, mode 0600
//!     state.cbor        ClientState (pinned keys, outbox, seen ids), CBOR,
//!                       mode 0600 (the outbox holds plaintext)
//! ```
//!
//! Files are replaced atomically: written to a temporary file in the same
//! directory, synced, renamed over the old one, and the directory synced.
//! A crash leaves either the old or the new file, never a torn one.

use crate::os::os_seed;
use missive_core::UserName;
use missive_core::client::{ClientState, StateDecodeError, StateEncodeError};
use missive_core::crypto::{Identity, KeyError};
use missive_core::rng;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// File name of the private key in a user's directory.
pub const KEY_FILE: &str = "key.pem";
/// File name of the client state in a user's directory.
pub const STATE_FILE: &str = "state.cbor";

/// Why the home directory could not be read or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HomeError {
    /// A file-system operation failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What went wrong.
        #[source]
        source: io::Error,
    },
    /// The key file does not hold a usable private key.
    #[error("{}: {source}", path.display())]
    Key {
        /// The key file.
        path: PathBuf,
        /// What is wrong with it.
        #[source]
        source: KeyError,
    },
    /// Key generation failed.
    #[error("key generation failed: {0}")]
    Generate(#[source] KeyError),
    /// The state file is not a client state.
    #[error("{}: {source}", path.display())]
    State {
        /// The state file.
        path: PathBuf,
        /// What is wrong with it.
        #[source]
        source: StateDecodeError,
    },
    /// The state could not be encoded.
    #[error(transparent)]
    Encode(#[from] StateEncodeError),
    /// A key file exists already (keys are never overwritten).
    #[error("{}: a key exists already", path.display())]
    KeyExists {
        /// The key file.
        path: PathBuf,
    },
    /// The operating system's random generator failed.
    #[error("{0}")]
    Random(#[source] io::Error),
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> HomeError + '_ {
    move |source| HomeError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// A client home directory holding the keys and states of any number of
/// users.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientHome {
    root: PathBuf,
}

impl ClientHome {
    /// The home directory at `root` (created when first written to).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// `~/.missive`, if the user's home directory is known (`$HOME`).
    pub fn default_root() -> Option<PathBuf> {
        let home = std::env::var_os("HOME").filter(|h| !h.is_empty())?;
        Some(PathBuf::from(home).join(".missive"))
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The directory of `user`.
    pub fn user(&self, user: &UserName) -> UserHome {
        UserHome {
            root: self.root.clone(),
            dir: self.root.join(user.as_str()),
            user: user.clone(),
        }
    }
}

/// One user's directory in a [`ClientHome`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserHome {
    root: PathBuf,
    dir: PathBuf,
    user: UserName,
}

impl UserHome {
    /// The user.
    pub fn user(&self) -> &UserName {
        &self.user
    }

    /// The user's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Path of the private key.
    pub fn key_path(&self) -> PathBuf {
        self.dir.join(KEY_FILE)
    }

    /// Path of the client state.
    pub fn state_path(&self) -> PathBuf {
        self.dir.join(STATE_FILE)
    }

    /// Whether a private key is stored.
    pub fn has_identity(&self) -> bool {
        self.key_path().is_file()
    }

    /// The stored private key, if any.
    pub fn load_identity(&self) -> Result<Option<Identity>, HomeError> {
        let path = self.key_path();
        let pem = match fs::read_to_string(&path) {
            Ok(pem) => zeroize::Zeroizing::new(pem),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err(&path)(e)),
        };
        warn_if_exposed(&path);
        Identity::from_pkcs8_pem(&pem)
            .map(Some)
            .map_err(|source| HomeError::Key { path, source })
    }

    /// Stores `identity` as PKCS#8 PEM, readable by the owner only. Never
    /// overwrites an existing key.
    pub fn save_identity(&self, identity: &Identity) -> Result<(), HomeError> {
        let path = self.key_path();
        if path.exists() {
            return Err(HomeError::KeyExists { path });
        }
        self.create_dirs()?;
        let pem = identity.to_pkcs8_pem();
        write_atomic(&self.dir, KEY_FILE, pem.as_bytes())?;
        Ok(())
    }

    /// The stored key, or a new one of `bits` bits (stored before it is
    /// returned). `progress` is called every 200 ms while generating, with
    /// the time spent so far. Returns whether the key was generated.
    pub fn load_or_generate_identity(
        &self,
        bits: usize,
        progress: impl FnMut(Duration),
    ) -> Result<(Identity, bool), HomeError> {
        if let Some(identity) = self.load_identity()? {
            return Ok((identity, false));
        }
        let identity = generate_identity(bits, progress)?;
        self.save_identity(&identity)?;
        Ok((identity, true))
    }

    /// The stored client state, or the initial one if none is stored.
    pub fn load_state(&self) -> Result<ClientState, HomeError> {
        let path = self.state_path();
        match fs::read(&path) {
            Ok(bytes) => {
                ClientState::from_cbor(&bytes).map_err(|source| HomeError::State { path, source })
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(ClientState::default()),
            Err(e) => Err(io_err(&path)(e)),
        }
    }

    /// Replaces the stored client state atomically.
    pub fn save_state(&self, state: &ClientState) -> Result<(), HomeError> {
        let bytes = state.to_cbor()?;
        self.create_dirs()?;
        // The outbox holds plaintext bodies: owner only, like the key.
        write_atomic(&self.dir, STATE_FILE, &bytes)
    }

    fn create_dirs(&self) -> Result<(), HomeError> {
        for dir in [&self.root, &self.dir] {
            if dir.is_dir() {
                continue;
            }
            let mut builder = fs::DirBuilder::new();
            builder.recursive(true);
            #[cfg(unix)]
            std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
            builder.create(dir).map_err(io_err(dir))?;
        }
        Ok(())
    }
}

/// Generates an RSA identity of `bits` bits seeded from the OS, calling
/// `progress` with the elapsed time every 200 ms until it is done (key
/// generation takes from a fraction of a second to several seconds).
pub fn generate_identity(
    bits: usize,
    mut progress: impl FnMut(Duration),
) -> Result<Identity, HomeError> {
    let seed = os_seed().map_err(HomeError::Random)?;
    let (tx, rx) = mpsc::channel();
    let worker = std::thread::Builder::new()
        .name("missive-keygen".into())
        .spawn(move || {
            let _ = tx.send(Identity::generate(&mut rng::from_seed(seed), bits));
        })
        .map_err(HomeError::Random)?;
    let start = Instant::now();
    let result = loop {
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(result) => break result,
            Err(mpsc::RecvTimeoutError::Timeout) => progress(start.elapsed()),
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                break Err(KeyError::Generation("the key generator panicked".into()));
            }
        }
    };
    let _ = worker.join();
    result.map_err(HomeError::Generate)
}

/// Writes `dir/name` atomically, readable by the owner only (mode 0600):
/// temporary file, sync, rename, sync of the directory.
fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), HomeError> {
    let tmp = dir.join(format!(".{name}.tmp.{}", std::process::id()));
    let target = dir.join(name);
    // A leftover of a crashed process with the same id: start afresh.
    let _ = fs::remove_file(&tmp);
    let result = (|| {
        let mut options = OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(&tmp).map_err(io_err(&tmp))?;
        file.write_all(bytes).map_err(io_err(&tmp))?;
        file.sync_all().map_err(io_err(&tmp))?;
        drop(file);
        fs::rename(&tmp, &target).map_err(io_err(&target))?;
        // Make the rename itself durable.
        #[cfg(unix)]
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io_err(dir))?;
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Logs a warning when a key file is readable by others.
fn warn_if_exposed(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = fs::metadata(path)
            && meta.permissions().mode() & 0o077 != 0
        {
            tracing::warn!(
                "{} is accessible by other users (mode {:o}); run chmod 600 on it",
                path.display(),
                meta.permissions().mode() & 0o777
            );
        }
    }
    #[cfg(not(unix))]
    let _ = path;
}

#[cfg(test)]
mod tests {
    use super::*;
    use missive_core::client::{Client, ClientConfig};

    fn identity() -> Identity {
        Identity::generate(&mut rng::from_seed([3; 32]), 2048).unwrap()
    }

    #[test]
    fn key_round_trip_with_private_mode() {
        let dir = tempfile::tempdir().unwrap();
        let home = ClientHome::new(dir.path().join("home"));
        let user = home.user(&UserName::new("alice").unwrap());
        assert!(user.load_identity().unwrap().is_none());
        let id = identity();
        user.save_identity(&id).unwrap();
        assert!(matches!(
            user.save_identity(&id),
            Err(HomeError::KeyExists { .. })
        ));
        let loaded = user.load_identity().unwrap().unwrap();
        assert_eq!(loaded.public_key(), id.public_key());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(user.key_path()).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
            let mode = fs::metadata(user.dir()).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o700);
        }
        let (again, generated) = user.load_or_generate_identity(2048, |_| {}).unwrap();
        assert!(!generated);
        assert_eq!(again.public_key(), id.public_key());
    }

    #[test]
    fn state_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let user = ClientHome::new(dir.path()).user(&UserName::new("bob").unwrap());
        assert_eq!(user.load_state().unwrap(), ClientState::default());
        let mut client = Client::new(
            ClientConfig::new(UserName::new("bob").unwrap()),
            identity(),
            ClientState::default(),
            [1; 32],
            Instant::now(),
            1_700_000_000_000,
        );
        client
            .send(
                Instant::now(),
                UserName::new("alice").unwrap(),
                b"hi".to_vec(),
            )
            .unwrap();
        user.save_state(client.state()).unwrap();
        assert_eq!(&user.load_state().unwrap(), client.state());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(user.state_path())
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        // No temporary file is left behind.
        let names: Vec<_> = fs::read_dir(user.dir())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from(STATE_FILE)]);
        fs::write(user.state_path(), b"garbage").unwrap();
        assert!(matches!(user.load_state(), Err(HomeError::State { .. })));
    }
}
