//! The client library, on any [`Runtime`] and any [`Connector`].
//!
//! [`ClientHandle::connect`] loads (or makes) the user's key from the home
//! directory, connects, and returns once logged in — registering the user
//! as [`ClientOptions::registration`] says. A background task owns the
//! connection and the core client: it answers pings, saves the state, and
//! reconnects with backoff when the connection drops, keeping the outbox
//! (unsent messages go out again, with the same ids, after the next login).
//! The connection policy is [`ClientSupervisor`]'s; the task only performs
//! its [`LinkAction`]s and feeds back what the connection and the timer say.

use super::runtime::{Alarm, Runtime, Task, timeout};
use super::transport::{Connecting, Connector, ReadHalf, TcpConnector, Transport, WriteHalf};
use crate::client::{ConnectError, Events, LoginInfo, Presence, PresenceError, SendError};
use crate::home::HomeError;
use crate::session::{
    ClientCommands, ClientOptions, ClientSupervisor, Command, CommandReceiver, LinkAction,
    commands, prepare_client,
};
use futures_channel::{mpsc, oneshot};
use futures_util::{Stream, StreamExt};
use missive_core::crypto::Fingerprint;
use missive_core::{MessageId, UserName};
use std::convert::Infallible;
use std::future::{Future, poll_fn};
use std::io;
use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

/// Time the writer gets to flush the last bytes (acknowledgements) at close.
const CLOSE_FLUSH: Duration = Duration::from_secs(2);

/// A connected client. Dropping it stops the client (its state is saved).
pub struct ClientHandle<R: Runtime, C: Connector = TcpConnector<R>> {
    commands: ClientCommands,
    task: Option<Task<()>>,
    user: UserName,
    fingerprint: Fingerprint,
    login: LoginInfo,
    runtime: PhantomData<fn() -> (R, C)>,
}

impl<R: Runtime, C: Connector> std::fmt::Debug for ClientHandle<R, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientHandle")
            .field("user", &self.user)
            .field("fingerprint", &self.fingerprint)
            .field("login", &self.login)
            .finish_non_exhaustive()
    }
}

impl<R: Runtime> ClientHandle<R> {
    /// Loads or makes the key, connects over TCP, registers if needed and
    /// allowed, logs in. Returns the handle and the stream of events.
    pub async fn connect(options: ClientOptions) -> Result<(Self, Events), ConnectError> {
        Self::connect_with(TcpConnector::default(), options).await
    }
}

impl<R: Runtime, C: Connector> ClientHandle<R, C> {
    /// [`connect`](ClientHandle::connect) through `connector` (any
    /// transport).
    pub async fn connect_with(
        connector: C,
        options: ClientOptions,
    ) -> Result<(Self, Events), ConnectError> {
        let prepared = {
            let options = options.clone();
            R::spawn_blocking(move || prepare_client(&options))
                .await
                .map_err(io::Error::other)??
        };
        let (commands, receiver) = commands();
        let (supervisor, login) = ClientSupervisor::new(prepared.engine, &options);
        let task = Task::spawn::<R>(run::<R, C>(connector, supervisor, receiver));
        match login.await {
            Ok(login) => Ok((
                ClientHandle {
                    commands,
                    task: Some(task),
                    user: options.user,
                    fingerprint: prepared.fingerprint,
                    login,
                    runtime: PhantomData,
                },
                prepared.events,
            )),
            Err(e) => {
                drop(commands);
                task.await;
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
            task.await;
        }
        result
    }
}

impl<R: Runtime, C: Connector> Drop for ClientHandle<R, C> {
    /// The task sees the commands end, saves the state and stops by itself.
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.detach();
        }
    }
}

/// One connection of the client task: the task reads, a writer task
/// writes.
struct Link<T: Transport> {
    reader: T::Reader,
    out: mpsc::UnboundedSender<Vec<u8>>,
    /// Resolves when the writer has stopped (on a write error while the link
    /// is up): the link is then lost.
    writer_gone: oneshot::Receiver<Infallible>,
    writer: Task<()>,
}

impl<T: Transport> Link<T> {
    fn new<R: Runtime>(transport: T) -> Self {
        let (reader, writer) = transport.split();
        let (out, rx) = mpsc::unbounded();
        let (alive, writer_gone) = oneshot::channel();
        let writer = Task::spawn::<R>(client_writer(writer, rx, alive));
        Self {
            reader,
            out,
            writer_gone,
            writer,
        }
    }

    /// Polls for the next chunk; an error when the writer failed.
    fn poll_chunk(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<Option<Vec<u8>>>> {
        if Pin::new(&mut self.writer_gone).poll(cx).is_ready() {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        self.reader.poll_chunk(cx)
    }

    /// Closes after writing what is queued; returns the writer to await.
    fn close(self) -> Task<()> {
        drop(self.out);
        self.writer
    }
}

/// Writes what the task queues, each time all that is queued as one batch
/// (one packet per buffer); on a write error stops, dropping `_alive`, so
/// that the task's read fails and the connection is reported lost.
async fn client_writer<W: WriteHalf>(
    mut writer: W,
    mut rx: mpsc::UnboundedReceiver<Vec<u8>>,
    _alive: oneshot::Sender<Infallible>,
) {
    let mut batch = Vec::new();
    while let Some(bytes) = rx.next().await {
        batch.push(bytes);
        while let Ok(more) = rx.try_recv() {
            batch.push(more);
        }
        if let Err(e) = writer.write_batch(&batch).await {
            tracing::debug!("write failed: {e}");
            return;
        }
        batch.clear();
    }
    let _ = writer.close().await;
}

/// What woke the client task.
enum Wake<T> {
    Command(Option<Command>),
    Connected(io::Result<T>),
    Read(io::Result<Option<Vec<u8>>>),
    Timer,
}

/// The client task: performs the supervisor's actions, feeds it what
/// happened.
async fn run<R: Runtime, C: Connector>(
    connector: C,
    mut sup: ClientSupervisor,
    mut commands: CommandReceiver,
) {
    let mut link: Option<Link<C::Transport>> = None;
    let mut connecting: Option<Connecting<C::Transport>> = None;
    let mut alarm = Alarm::<R>::new();
    sup.start(R::now());
    loop {
        perform(&connector, &mut sup, &mut link, &mut connecting);
        if sup.is_stopped() {
            break;
        }
        alarm.set(sup.poll_timeout());
        let wake = poll_fn(|cx| {
            if let Poll::Ready(command) = Pin::new(&mut commands).poll_next(cx) {
                return Poll::Ready(Wake::Command(command));
            }
            if let Some(attempt) = connecting.as_mut()
                && let Poll::Ready(result) = attempt.as_mut().poll(cx)
            {
                return Poll::Ready(Wake::Connected(result));
            }
            if let Some(link) = link.as_mut()
                && let Poll::Ready(read) = link.poll_chunk(cx)
            {
                return Poll::Ready(Wake::Read(read));
            }
            alarm.poll(cx).map(|()| Wake::Timer)
        })
        .await;
        let now = R::now();
        match wake {
            Wake::Command(Some(command)) => sup.command(now, command),
            Wake::Command(None) => sup.handles_gone(),
            Wake::Connected(result) => {
                connecting = None;
                match result {
                    Ok(transport) => {
                        let wire = transport.link();
                        link = Some(Link::new::<R>(transport));
                        sup.connected(now, wire);
                    }
                    Err(e) => sup.connect_failed(now, e),
                }
            }
            Wake::Read(Ok(None)) => sup.lost(now, io::ErrorKind::UnexpectedEof.into()),
            Wake::Read(Ok(Some(chunk))) => sup.received(now, &chunk),
            Wake::Read(Err(e)) if e.kind() == io::ErrorKind::Interrupted => {}
            Wake::Read(Err(e)) => sup.lost(now, e),
            Wake::Timer => sup.timeout(now),
        }
    }
    sup.finish();
    let writer = perform(&connector, &mut sup, &mut link, &mut connecting);
    if let Some(writer) = writer {
        // Let acknowledgements reach the server.
        let _ = timeout::<R, _>(CLOSE_FLUSH, writer).await;
    }
    sup.finished(R::now());
}

/// Performs the supervisor's pending actions; returns the writer of a link
/// it closed.
fn perform<C: Connector>(
    connector: &C,
    sup: &mut ClientSupervisor,
    link: &mut Option<Link<C::Transport>>,
    connecting: &mut Option<Connecting<C::Transport>>,
) -> Option<Task<()>> {
    let mut writer = None;
    while let Some(action) = sup.poll_action() {
        match action {
            LinkAction::Connect => *connecting = Some(connector.connect(sup.server())),
            LinkAction::Write(bytes) => {
                if let Some(link) = link.as_ref() {
                    let _ = link.out.unbounded_send(bytes);
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
