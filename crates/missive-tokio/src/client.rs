//! The client library on tokio.
//!
//! [`ClientHandle::connect`] loads (or makes) the user's key from the home
//! directory, connects, and returns once logged in — registering the user
//! as [`ClientOptions::registration`] says. A background task owns the
//! socket and the core client: it answers pings, saves the state, and
//! reconnects with backoff when the connection drops, keeping the outbox
//! (unsent messages go out again, with the same ids, after the next login). The connection policy is
//! [`ClientSupervisor`]'s (in `missive-runtime`); the task only performs its
//! [`LinkAction`]s and feeds back what the socket and the timer say.

use crate::server::{connect_tcp, sleep_until};
use futures_util::StreamExt;
use missive_core::crypto::Fingerprint;
use missive_core::{MessageId, UserName};
use missive_runtime::client::{
    ConnectError, Events, LoginInfo, Presence, PresenceError, SendError,
};
use missive_runtime::home::HomeError;
use missive_runtime::session::{
    ClientCommands, ClientOptions, ClientSupervisor, CommandReceiver, LinkAction, commands,
    prepare_client,
};
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::mpsc;
use tokio::task::{self, JoinHandle};

/// Bytes read from the socket at once.
const READ_CHUNK: usize = 16 * 1024;
/// Time the writer gets to flush the last bytes (acknowledgements) at close.
const CLOSE_FLUSH: Duration = Duration::from_secs(2);

/// A connected client. Dropping it stops the client (its state is saved).
///
/// ```no_run
/// use missive_core::UserName;
/// use missive_core::client::ClientEvent;
/// use missive_tokio::{ClientHandle, ClientOptions};
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let alice = UserName::new("alice")?;
/// let options = ClientOptions::new("127.0.0.1:7878", "/tmp/missive-home", alice);
/// let (client, mut events) = ClientHandle::connect(options).await?;
/// let id = client.send(UserName::new("bob")?, "hello bob").await?;
/// println!("accepted {id}");
/// while let Some(event) = events.recv().await {
///     if let ClientEvent::MessageReceived { from, body, .. } = event {
///         println!("{from}: {}", String::from_utf8_lossy(&body));
///     }
/// }
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct ClientHandle {
    commands: ClientCommands,
    task: Option<JoinHandle<()>>,
    user: UserName,
    fingerprint: Fingerprint,
    login: LoginInfo,
}

impl ClientHandle {
    /// Loads or makes the key, connects, registers if needed and allowed,
    /// logs in. Returns the handle and the stream of events.
    pub async fn connect(options: ClientOptions) -> Result<(ClientHandle, Events), ConnectError> {
        let prepared = {
            let options = options.clone();
            task::spawn_blocking(move || prepare_client(&options))
                .await
                .map_err(io::Error::other)??
        };
        let (commands, receiver) = commands();
        let (supervisor, login) = ClientSupervisor::new(prepared.engine, &options);
        let task = tokio::spawn(run(supervisor, receiver));
        match login.await {
            Ok(login) => Ok((
                ClientHandle {
                    commands,
                    task: Some(task),
                    user: options.user,
                    fingerprint: prepared.fingerprint,
                    login,
                },
                prepared.events,
            )),
            Err(e) => {
                drop(commands);
                let _ = task.await;
                Err(e)
            }
        }
    }

    /// The user.
    pub fn user(&self) -> &UserName {
        &self.user
    }

    /// The fingerprint of this user's own key.
    pub fn fingerprint(&self) -> Fingerprint {
        self.fingerprint
    }

    /// What the first login reported (whether it registered the user, how
    /// many items were waiting).
    pub fn login(&self) -> LoginInfo {
        self.login
    }

    /// Sends `body` to `to`, end-to-end encrypted. Resolves with the message
    /// id once the server has durably accepted it, or with the reason it
    /// never will be. The message survives reconnections meanwhile (and a
    /// restart of the client: it stays in the saved outbox).
    pub async fn send(
        &self,
        to: UserName,
        body: impl Into<Vec<u8>>,
    ) -> Result<MessageId, SendError> {
        self.commands.send(to, body.into()).await
    }

    /// Announces presence: `true` online (deliveries flow), `false` offline
    /// while staying connected.
    pub fn set_presence(&self, online: bool) {
        self.commands.set_presence(online);
    }

    /// Asks for `user`'s presence and waits for the answer.
    pub async fn query_presence(&self, user: UserName) -> Result<Presence, PresenceError> {
        self.commands.query_presence(user).await
    }

    /// Trusts the key the server offers now for `user` (after a
    /// `KeyChanged` event): the pinned key is forgotten and the next fetch
    /// pins the new one.
    pub fn trust_key(&self, user: UserName) {
        self.commands.trust_key(user);
    }

    /// The fingerprint of the key pinned for `user`, if any.
    pub async fn pinned_fingerprint(&self, user: UserName) -> Option<Fingerprint> {
        self.commands.pinned_fingerprint(user).await
    }

    /// Stops the client: writes what is queued (acknowledgements included),
    /// saves the state, closes the connection. Messages not yet accepted stay
    /// in the saved outbox.
    pub async fn close(mut self) -> Result<(), HomeError> {
        let result = self.commands.close().await;
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
        result
    }
}

/// One TCP connection of the client task: the task reads, a writer task
/// writes.
struct Link {
    rd: OwnedReadHalf,
    out: mpsc::UnboundedSender<Vec<u8>>,
    writer: JoinHandle<()>,
}

impl Link {
    fn new(stream: TcpStream) -> Self {
        let (rd, wr) = stream.into_split();
        let (out, rx) = mpsc::unbounded_channel();
        let writer = tokio::spawn(client_writer(wr, rx));
        Self { rd, out, writer }
    }

    /// Reads some bytes; an error when the writer failed.
    async fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        tokio::select! {
            read = self.rd.read(buf) => read,
            () = self.out.closed() => Err(io::ErrorKind::BrokenPipe.into()),
        }
    }

    /// Closes after writing what is queued; returns the writer to await.
    fn close(self) -> JoinHandle<()> {
        drop(self.out);
        self.writer
    }
}

/// Writes what the task queues; on a write error stops, which closes the
/// channel, so that the task's read fails and the connection is reported
/// lost.
async fn client_writer(mut wr: OwnedWriteHalf, mut rx: mpsc::UnboundedReceiver<Vec<u8>>) {
    while let Some(bytes) = rx.recv().await {
        if let Err(e) = wr.write_all(&bytes).await {
            tracing::debug!("write failed: {e}");
            return;
        }
    }
    let _ = wr.shutdown().await;
}

type Connecting = Pin<Box<dyn Future<Output = io::Result<TcpStream>> + Send>>;

/// The client task: performs the supervisor's actions, feeds it what
/// happened.
async fn run(mut sup: ClientSupervisor, mut commands: CommandReceiver) {
    let mut link: Option<Link> = None;
    let mut connecting: Option<Connecting> = None;
    let mut buf = vec![0u8; READ_CHUNK];
    sup.start(Instant::now());
    loop {
        perform(&mut sup, &mut link, &mut connecting);
        if sup.is_stopped() {
            break;
        }
        let deadline = sup.poll_timeout();
        tokio::select! {
            command = commands.next() => match command {
                Some(command) => sup.command(Instant::now(), command),
                None => sup.handles_gone(),
            },
            connected = async { connecting.as_mut().expect("guarded").await }, if connecting.is_some() => {
                connecting = None;
                let now = Instant::now();
                match connected {
                    Ok(stream) => {
                        link = Some(Link::new(stream));
                        sup.connected(now);
                    }
                    Err(e) => sup.connect_failed(now, e),
                }
            },
            read = async { link.as_mut().expect("guarded").read(&mut buf).await }, if link.is_some() => {
                let now = Instant::now();
                match read {
                    Ok(0) => sup.lost(now, "the server closed the connection"),
                    Ok(n) => sup.received(now, &buf[..n]),
                    Err(e) => sup.lost(now, &e.to_string()),
                }
            },
            () = sleep_until(deadline), if deadline.is_some() => sup.timeout(Instant::now()),
        }
    }
    sup.finish();
    let writer = perform(&mut sup, &mut link, &mut connecting);
    if let Some(writer) = writer {
        // Let acknowledgements reach the server.
        let _ = tokio::time::timeout(CLOSE_FLUSH, writer).await;
    }
    sup.finished(Instant::now());
}

/// Performs the supervisor's pending actions; returns the writer of a link
/// it closed.
fn perform(
    sup: &mut ClientSupervisor,
    link: &mut Option<Link>,
    connecting: &mut Option<Connecting>,
) -> Option<JoinHandle<()>> {
    let mut writer = None;
    while let Some(action) = sup.poll_action() {
        match action {
            LinkAction::Connect => {
                *connecting = Some(Box::pin(connect_tcp(sup.server().to_string())));
            }
            LinkAction::Write(bytes) => {
                if let Some(link) = link.as_ref() {
                    let _ = link.out.send(bytes);
                }
            }
            LinkAction::Close => {
                *connecting = None;
                if let Some(link) = link.take() {
                    writer = Some(link.close());
                }
            }
        }
    }
    writer
}
