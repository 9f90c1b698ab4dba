//! One HTTP/2 connection to the gateway, shared by every call and tunnel of a command.
//!
//! [`Session::connect`] opens the transport and runs the HTTP/2 handshake; a spawned task
//! drives the connection while [`Session`] handles (cheap clones of h2's `SendRequest`)
//! issue requests on it. API calls are [`Session::get_json`], [`Session::post_json`] and
//! [`Session::post_empty`];
//! binary answers (screenshots) [`Session::get_bytes`]; endless answers (the event stream)
//! [`Session::get_stream`], read chunk by chunk through [`BodyStream`]; byte tunnels are
//! [`Session::open_tunnel`] (extended CONNECT, RFC 8441, `:protocol` = `virtgate-stream`).
//!
//! The connection runs on `h2` directly, not through hyper's client: a [`Tunnel`] needs
//! the stream's own flow control ([`flow`]: interactive tunnels never wait behind bulk
//! ones), and hyper's upgraded streams hide it.
//!
//! With Kerberos the transport hands over a pending login: the connection's first request
//! carries `Authorization: Negotiate <token>`, and no other request is sent until its answer
//! has arrived (a lock held across it). The gateway's `WWW-Authenticate: Negotiate <token>`
//! must complete the context with mutual authentication, else the request fails; a 401 with
//! a token is another leg (at most [`MAX_LEGS`]). After that the connection is bound to the
//! principal and later requests and tunnels carry no token.
//!
//! When the connection dies, its task records why; [`Session::closed`] resolves then, and a
//! request that failed because of it reports the connection's error (in TLS 1.3 that is where
//! the gateway's verdict on our certificate shows up). HTTP/2 PINGs ([`Keepalive`], from the
//! profile) find a gateway that vanished without closing; [`liveness`] tells that end apart
//! from a closed connection, so every command ends with "the gateway stopped answering".

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use h2::client::SendRequest;
use h2::{RecvStream, SendStream};
use http::header::{AUTHORIZATION, CONTENT_TYPE};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::{watch, Mutex};
use virtgate_proto::{ApiPath, TUNNEL_PROTOCOL};

use crate::error::{
    chain_text, find_tls_error, Error, KerberosContext, KerberosFailure, TlsContext, TlsFailure,
};
use crate::transport::kerberos::{self, Challenge, Negotiation};
use crate::transport::{Connected, Transport};

mod body;
pub mod liveness;

use body::{content_type, problem};
pub use body::{parse_problem, BodyStream, RecvBody};
pub use liveness::Keepalive;
use liveness::Watched;
use virtgate_tunnel::Flow;
pub use virtgate_tunnel::Tunnel;

/// Largest response body read into memory (JSON and problem bodies are small).
const MAX_BODY: usize = 16 << 20;

/// HTTP/2 flow control and frames: shared with the gateway, chosen from the benchmarks
/// (see `virtgate_proto::tuning`).
use virtgate_proto::tuning::{CONNECTION_WINDOW, MAX_FRAME};

use virtgate_tunnel::stream::send_buffer;

/// How long to wait for the connection task's verdict after a request failed.
const VERDICT_WAIT: Duration = Duration::from_secs(2);

/// Most Negotiate round trips on one request (SPNEGO and krb5 need one).
pub const MAX_LEGS: usize = 3;

/// The body of a request and its content type (none for an empty body).
#[derive(Clone, Default)]
struct Payload {
    /// The bytes sent.
    bytes: Bytes,
    /// Its `content-type`, when there is a body.
    content_type: Option<&'static str>,
}

/// How the connection ended, as recorded by its driver task.
#[derive(Debug)]
enum End {
    /// It closed, or broke with this error.
    Closed(Option<h2::Error>),
    /// The gateway stopped answering: nothing arrived for this long, the keepalive ran out.
    Stalled(Duration),
}

/// `None` while the connection runs.
type Ending = Option<Arc<End>>;

/// A request's answer, and the sending half of its stream (a tunnel's way up).
struct Exchange {
    /// The answer's head, and h2's body.
    resp: Response<RecvStream>,
    /// The request's stream, still open for a CONNECT.
    send: SendStream<Bytes>,
}

impl Exchange {
    /// The answer with a readable body (the request's stream is done with).
    fn answer(self) -> Response<RecvBody> {
        self.resp.map(RecvBody::new)
    }
}

/// What [`Session::raw_tunnel`] brings back.
pub enum Raw {
    /// An answer, as the gateway gave it.
    Answer(Response<RecvBody>),
    /// A CONNECT the gateway answered 200: the answer's headers and the tunnel.
    Tunnel(http::HeaderMap, Tunnel),
}

/// A handle on the HTTP/2 connection. Clones share the connection.
#[derive(Clone)]
pub struct Session {
    /// h2's request handle; cloned per request.
    send: SendRequest<Bytes>,
    /// The tunnels' shared flow state (interactive ones first).
    flow: Arc<Flow>,
    /// This end's stream window on this transport (sizes h2's send buffer per stream).
    stream_window: u32,
    /// `host:port` for the `:authority` of requests.
    authority: String,
    /// Names and files for error messages.
    context: TlsContext,
    /// Set once by the driver task when the connection ends (with its error, if any).
    ended: watch::Receiver<Ending>,
    /// Whether the connection still has to log in; locked across the login request.
    login: Arc<Mutex<Login>>,
    /// The keepalive the connection runs, for messages.
    keepalive: Keepalive,
}

/// The login state of the connection.
enum Login {
    /// Nothing (more) to do: authenticated by the transport, or Negotiate succeeded.
    Done,
    /// Kerberos: the next request carries this token.
    Pending(Negotiation),
    /// The Negotiate login failed; the connection is not authenticated.
    Failed(Box<KerberosContext>),
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("server", &self.context.server)
            .field("ended", &self.ended.borrow().is_some())
            .finish_non_exhaustive()
    }
}

impl Session {
    /// Connect the transport and run the HTTP/2 handshake; `keepalive` finds a gateway that
    /// stopped answering.
    pub async fn connect(transport: &Transport, keepalive: Keepalive) -> Result<Session, Error> {
        Session::over(transport.connect().await?, keepalive).await
    }

    /// Run HTTP/2 over a stream that is already connected (`doctor` connects step by step
    /// and looks at each step before handing the stream over).
    pub async fn over(mut connected: Connected, keepalive: Keepalive) -> Result<Session, Error> {
        let login = match connected.negotiation.take() {
            Some(n) => Login::Pending(n),
            None => Login::Done,
        };
        let stream_window = connected.stream_window;
        let mut builder = h2::client::Builder::new();
        builder
            .initial_window_size(stream_window)
            .initial_connection_window_size(CONNECTION_WINDOW)
            .max_frame_size(MAX_FRAME)
            // a tunnel measures what it has in flight as window minus capacity, and h2 caps
            // a stream's capacity at this buffer (400 KiB by default): it must cover the
            // gateway's window. Nothing is buffered beyond capacity: it costs no memory.
            .max_send_buffer_size(send_buffer(stream_window))
            .enable_push(false);
        let (stream, liveness) = Watched::new(connected.stream);
        let (send, mut conn) = builder
            .handshake::<_, Bytes>(stream)
            .await
            .map_err(|e| lost(&connected.context, &e))?;
        let pings = conn.ping_pong();
        let (tx, ended) = watch::channel(None);
        let watch = liveness.clone();
        tokio::spawn(async move {
            let end = tokio::select! {
                result = &mut conn => {
                    let silent = watch.silent_for();
                    match result {
                        // the SSH transport's own keepalive may close the channel first
                        _ if keepalive.ran_out(silent) => {
                            tracing::debug!(
                                ?silent,
                                "HTTP/2 connection ended: the gateway stopped answering"
                            );
                            End::Stalled(silent)
                        }
                        Err(e) => {
                            tracing::debug!(error = %chain_text(&e), "HTTP/2 connection ended");
                            End::Closed(Some(e))
                        }
                        Ok(()) => {
                            tracing::debug!("HTTP/2 connection closed");
                            End::Closed(None)
                        }
                    }
                }
                silent = liveness::keep_alive(pings, keepalive, watch.clone()) => {
                    tracing::debug!(?silent, "HTTP/2 keepalive ran out: the gateway stopped answering");
                    End::Stalled(silent)
                }
            };
            // dropping the connection ends its streams
            drop(conn);
            let _ = tx.send(Some(Arc::new(end)));
        });
        Ok(Session {
            send,
            flow: Arc::new(Flow::default()),
            stream_window,
            authority: connected.authority,
            context: connected.context,
            ended,
            login: Arc::new(Mutex::new(login)),
            keepalive,
        })
    }

    /// The `:authority` of requests (`host:port`; `localhost` over SSH and unix sockets).
    pub fn authority(&self) -> &str {
        &self.authority
    }

    /// `host:port` of the gateway, for messages.
    pub fn server(&self) -> &str {
        &self.context.server
    }

    /// `GET` an API path and decode its JSON body; error statuses become [`Error::Problem`].
    pub async fn get_json<T: DeserializeOwned>(&self, path: &ApiPath) -> Result<T, Error> {
        let what = format!("GET {}", path.to_path());
        let resp = self
            .send(&what, &Method::GET, path, &Payload::default())
            .await?;
        self.json_answer(what, resp.answer()).await
    }

    /// [`Session::get_json`], also returning the answer's headers (`doctor` reads the
    /// gateway's `Date` from them).
    pub async fn get_json_with_headers<T: DeserializeOwned>(
        &self,
        path: &ApiPath,
    ) -> Result<(T, http::HeaderMap), Error> {
        let what = format!("GET {}", path.to_path());
        let resp = self
            .send(&what, &Method::GET, path, &Payload::default())
            .await?
            .answer();
        let headers = resp.headers().clone();
        Ok((self.json_answer(what, resp).await?, headers))
    }

    /// `POST` a JSON body to an API path and decode the JSON answer; error statuses become
    /// [`Error::Problem`].
    pub async fn post_json<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &ApiPath,
        body: &B,
    ) -> Result<T, Error> {
        let what = format!("POST {}", path.to_path());
        let bytes = serde_json::to_vec(body).map_err(|e| Error::BadResponse {
            request: what.clone(),
            detail: format!("cannot encode the request body: {e}"),
        })?;
        let payload = Payload {
            bytes: Bytes::from(bytes),
            content_type: Some("application/json"),
        };
        let resp = self.send(&what, &Method::POST, path, &payload).await?;
        self.json_answer(what, resp.answer()).await
    }

    /// `POST` with an empty body to an API path and decode the JSON answer.
    pub async fn post_empty<T: DeserializeOwned>(&self, path: &ApiPath) -> Result<T, Error> {
        let what = format!("POST {}", path.to_path());
        let resp = self
            .send(&what, &Method::POST, path, &Payload::default())
            .await?;
        self.json_answer(what, resp.answer()).await
    }

    /// `GET` an API path whose answer is binary (at most `limit` bytes); returns the body and
    /// its content type. Error statuses become [`Error::Problem`].
    pub async fn get_bytes(
        &self,
        path: &ApiPath,
        limit: usize,
    ) -> Result<(Bytes, Option<String>), Error> {
        let what = format!("GET {}", path.to_path());
        let resp = self
            .send(&what, &Method::GET, path, &Payload::default())
            .await?
            .answer();
        let status = resp.status();
        let content_type = content_type(&resp);
        let body = self.body_limited(&what, resp, limit).await?;
        if !status.is_success() {
            return Err(problem(status, &body));
        }
        Ok((body, content_type))
    }

    /// `GET` an API path whose answer goes on as long as the gateway likes (the event
    /// stream); returns the content type and the body to read chunk by chunk. Error statuses
    /// become [`Error::Problem`].
    pub async fn get_stream(&self, path: &ApiPath) -> Result<(Option<String>, BodyStream), Error> {
        let what = format!("GET {}", path.to_path());
        let resp = self
            .send(&what, &Method::GET, path, &Payload::default())
            .await?
            .answer();
        let status = resp.status();
        if !status.is_success() {
            let body = self.body(&what, resp).await?;
            return Err(problem(status, &body));
        }
        let content_type = content_type(&resp);
        Ok((
            content_type,
            BodyStream {
                body: resp.into_body(),
                session: self.clone(),
                what,
            },
        ))
    }

    /// Send any API request and hand the gateway's answer back as it is, error statuses
    /// included (the shared connection's proxy passes answers on to local clients).
    pub async fn forward(
        &self,
        method: &Method,
        path: &ApiPath,
        body: Bytes,
        json: bool,
    ) -> Result<Response<RecvBody>, Error> {
        let what = format!("{method} {}", path.to_path());
        let payload = Payload {
            content_type: (json && !body.is_empty()).then_some("application/json"),
            bytes: body,
        };
        Ok(self.send(&what, method, path, &payload).await?.answer())
    }

    /// Send a request the caller built (method, path and query, headers, body) to the
    /// gateway, and hand its answer back as it is: `virtgate web`'s local pages pass browser
    /// requests on. Only on a connection that needs no (more) login: the SSH and unix
    /// transports.
    pub async fn raw(&self, req: Request<Bytes>) -> Result<Response<RecvBody>, Error> {
        Ok(self.raw_exchange(req).await?.answer())
    }

    /// [`Session::raw`] for a CONNECT (with the `:protocol` the caller set as an
    /// `h2::ext::Protocol`): a 200 is a tunnel, any other answer comes back as it is.
    pub async fn raw_tunnel(&self, req: Request<Bytes>) -> Result<Raw, Error> {
        let ex = self.raw_exchange(req).await?;
        if ex.resp.status() != StatusCode::OK {
            return Ok(Raw::Answer(ex.answer()));
        }
        let (headers, tunnel) = self.tunnel(ex);
        Ok(Raw::Tunnel(headers, tunnel))
    }

    async fn raw_exchange(&self, req: Request<Bytes>) -> Result<Exchange, Error> {
        let (mut parts, body) = req.into_parts();
        let pq = parts
            .uri
            .path_and_query()
            .map_or_else(|| "/".to_owned(), |p| p.as_str().to_owned());
        let uri = format!("https://{}{pq}", self.authority);
        parts.uri = uri.parse().map_err(|e| Error::Setting {
            message: format!("cannot build a request for {uri}: {e}"),
            hint: "report this as a bug".into(),
        })?;
        let what = format!("{} {pq}", parts.method);
        if !matches!(*self.login.lock().await, Login::Done) {
            return Err(Error::Setting {
                message: format!("{what}: the connection has not logged in"),
                hint: "serving the pages locally needs an SSH or unix-socket URL".into(),
            });
        }
        self.send_once(&what, Request::from_parts(parts, ()), body)
            .await
    }

    /// The tunnel of a CONNECT the gateway answered 200, and the answer's headers.
    fn tunnel(&self, ex: Exchange) -> (http::HeaderMap, Tunnel) {
        let (parts, recv) = ex.resp.into_parts();
        let tunnel = Tunnel::new(
            ex.send,
            recv,
            self.flow.clone(),
            send_buffer(self.stream_window),
            self.stream_window,
        );
        (parts.headers, tunnel)
    }

    /// A JSON answer: decoded on success, a problem otherwise.
    async fn json_answer<T: DeserializeOwned>(
        &self,
        what: String,
        resp: Response<RecvBody>,
    ) -> Result<T, Error> {
        let status = resp.status();
        let body = self.body(&what, resp).await?;
        if !status.is_success() {
            return Err(problem(status, &body));
        }
        serde_json::from_slice(&body).map_err(|e| Error::BadResponse {
            request: what,
            detail: format!("the body is not the expected JSON: {e}"),
        })
    }

    /// Open a byte tunnel (extended CONNECT). A non-200 answer becomes [`Error::Problem`].
    pub async fn open_tunnel(&self, path: &ApiPath) -> Result<Tunnel, Error> {
        Ok(self.open_tunnel_with_headers(path).await?.1)
    }

    /// [`Session::open_tunnel`], also returning the response headers (a new libvirt
    /// descriptor's id comes in one).
    pub async fn open_tunnel_with_headers(
        &self,
        path: &ApiPath,
    ) -> Result<(http::HeaderMap, Tunnel), Error> {
        let what = format!("CONNECT {}", path.to_path());
        let ex = self
            .send(&what, &Method::CONNECT, path, &Payload::default())
            .await?;
        let status = ex.resp.status();
        if status != StatusCode::OK {
            let body = self.body(&what, ex.answer()).await?;
            return Err(problem(status, &body));
        }
        Ok(self.tunnel(ex))
    }

    /// Resolves when the connection has ended, with the error that explains it.
    pub async fn closed(&self) -> Error {
        let mut rx = self.ended.clone();
        let ending = rx
            .wait_for(|e| e.is_some())
            .await
            .ok()
            .and_then(|e| e.clone());
        match ending {
            Some(end) => self.ending_error(&end),
            None => self.ending_error(&End::Closed(None)),
        }
    }

    /// A request's head; CONNECT is an extended CONNECT opening a tunnel.
    fn request(
        &self,
        method: &Method,
        path: &ApiPath,
        payload: &Payload,
    ) -> Result<Request<()>, Error> {
        let uri = format!("https://{}{}", self.authority, path.to_path());
        let mut builder = Request::builder().method(method.clone()).uri(&uri);
        if let Some(ct) = payload.content_type {
            builder = builder.header(CONTENT_TYPE, ct);
        }
        let mut req = builder.body(()).map_err(|e| Error::Setting {
            message: format!("cannot build a request for {uri}: {e}"),
            hint: "check the domain name".into(),
        })?;
        if method == Method::CONNECT {
            req.extensions_mut()
                .insert(h2::ext::Protocol::from_static(TUNNEL_PROTOCOL));
        }
        Ok(req)
    }

    /// Send a request; the first one on a Kerberos connection logs in, and every other
    /// request waits until it has.
    async fn send(
        &self,
        what: &str,
        method: &Method,
        path: &ApiPath,
        payload: &Payload,
    ) -> Result<Exchange, Error> {
        let mut login = self.login.lock().await;
        match std::mem::replace(&mut *login, Login::Done) {
            Login::Done => {
                drop(login);
                let req = self.request(method, path, payload)?;
                self.send_once(what, req, payload.bytes.clone()).await
            }
            Login::Pending(n) => {
                // the lock stays held: nothing else is sent until the login is decided
                *login = Login::Failed(Box::new(n.negotiator.context().clone()));
                let (resp, bound) = self.negotiate(what, method, path, payload, n).await?;
                if bound {
                    *login = Login::Done;
                }
                Ok(resp)
            }
            Login::Failed(context) => {
                let err = Error::Kerberos {
                    failure: KerberosFailure::NotLoggedIn,
                    context: context.clone(),
                };
                *login = Login::Failed(context);
                Err(err)
            }
        }
    }

    /// Send the login request: `Authorization: Negotiate`, more legs while the gateway
    /// answers 401 with a token, then check its mutual-authentication token. Returns the
    /// answer and whether the connection is now bound. A refusal (401 without a token, or an
    /// error answer before any login) is returned as an answer for the caller to report.
    async fn negotiate(
        &self,
        what: &str,
        method: &Method,
        path: &ApiPath,
        payload: &Payload,
        n: Negotiation,
    ) -> Result<(Exchange, bool), Error> {
        let Negotiation {
            mut negotiator,
            mut token,
        } = n;
        for leg in 1..=MAX_LEGS {
            let mut req = self.request(method, path, payload)?;
            req.headers_mut()
                .insert(AUTHORIZATION, kerberos::authorization(&token));
            let resp = self.send_once(what, req, payload.bytes.clone()).await?;
            let status = resp.resp.status();
            let challenge = kerberos::parse_challenge(resp.resp.headers());
            tracing::debug!(leg, %status, challenge = challenge_kind(&challenge), "Negotiate answer");
            if status == StatusCode::UNAUTHORIZED {
                let Challenge::Token(t) = challenge else {
                    return Ok((resp, false));
                };
                if leg == MAX_LEGS || negotiator.is_complete() {
                    return Ok((resp, false));
                }
                let (next_negotiator, next) = negotiator.step(t).await?;
                negotiator = next_negotiator;
                match next {
                    Some(next) => token = next,
                    None => return Ok((resp, false)),
                }
                continue;
            }
            return match challenge {
                Challenge::Token(t) => {
                    let (done, next) = negotiator.step(t).await?;
                    if next.is_some() || !done.verified()? {
                        return Err(done.failure(KerberosFailure::NoMutualAuth));
                    }
                    tracing::debug!(target = %done.target(), "Kerberos login done, mutual authentication verified");
                    Ok((resp, true))
                }
                Challenge::Malformed => Err(negotiator.failure(KerberosFailure::BadMutualAuth(
                    "its WWW-Authenticate: Negotiate token is not base64".into(),
                ))),
                // an error answer the gateway gave before logging us in: report it as is
                _ if !status.is_success() => Ok((resp, false)),
                _ => Err(negotiator.failure(KerberosFailure::NoMutualAuth)),
            };
        }
        Err(negotiator.failure(KerberosFailure::Other(format!(
            "the gateway wanted more than {MAX_LEGS} Negotiate round trips"
        ))))
    }

    /// Send one request with `body` (a CONNECT keeps its stream open for the tunnel).
    async fn send_once(
        &self,
        what: &str,
        req: Request<()>,
        body: Bytes,
    ) -> Result<Exchange, Error> {
        let connect = req.method() == Method::CONNECT;
        let sent = async {
            let mut send = self.send.clone().ready().await?;
            let end = body.is_empty() && !connect;
            let (resp, mut stream) = send.send_request(req, end)?;
            if !body.is_empty() {
                stream.send_data(body, !connect)?;
            }
            Ok::<_, h2::Error>(Exchange {
                resp: resp.await?,
                send: stream,
            })
        };
        match sent.await {
            Ok(ex) => Ok(ex),
            Err(e) => Err(self.request_error(what, &e).await),
        }
    }

    async fn body(&self, what: &str, resp: Response<RecvBody>) -> Result<Bytes, Error> {
        self.body_limited(what, resp, MAX_BODY).await
    }

    async fn body_limited(
        &self,
        what: &str,
        resp: Response<RecvBody>,
        limit: usize,
    ) -> Result<Bytes, Error> {
        match Limited::new(resp.into_body(), limit).collect().await {
            Ok(b) => Ok(b.to_bytes()),
            Err(e) => {
                if let Some(h) = e.downcast_ref::<h2::Error>() {
                    return Err(self.request_error(what, h).await);
                }
                Err(Error::BadResponse {
                    request: what.to_owned(),
                    detail: chain_text(&*e),
                })
            }
        }
    }

    /// Explain a failed request: a TLS verdict in its own chain or in the connection's,
    /// else a lost connection, else a failure of this request alone.
    async fn request_error(&self, what: &str, e: &h2::Error) -> Error {
        if let Some(t) = find_tls_error(e) {
            return self.tls(TlsFailure::from_rustls(&t));
        }
        let mut rx = self.ended.clone();
        let ending = tokio::time::timeout(VERDICT_WAIT, rx.wait_for(|e| e.is_some()))
            .await
            .ok()
            .and_then(|r| r.ok().and_then(|e| e.clone()));
        match ending {
            // the connection ended: its error explains this request's failure
            Some(end) => match &*end {
                End::Closed(None) => lost(&self.context, e),
                end => self.ending_error(end),
            },
            // the connection is fine: only this request failed
            None => Error::BadResponse {
                request: what.to_owned(),
                detail: chain_text(e),
            },
        }
    }

    fn ending_error(&self, end: &End) -> Error {
        match end {
            End::Stalled(silent) => self.unresponsive(*silent),
            End::Closed(Some(e)) => match find_tls_error(e) {
                Some(t) => self.tls(TlsFailure::from_rustls(&t)),
                None => lost(&self.context, e),
            },
            End::Closed(None) => Error::ConnectionLost {
                server: self.context.server.clone(),
                reason: "the gateway closed the connection".into(),
            },
        }
    }

    fn unresponsive(&self, silent: Duration) -> Error {
        Error::GatewayUnresponsive {
            server: self.context.server.clone(),
            timeout_s: self.keepalive.timeout.as_secs(),
            silent_s: silent.as_secs(),
        }
    }

    fn tls(&self, failure: TlsFailure) -> Error {
        Error::Tls {
            failure: failure.refine(&self.context),
            context: Box::new(self.context.clone()),
        }
    }
}

/// The kind of a challenge, for logs (never the token).
fn challenge_kind(c: &Challenge) -> &'static str {
    match c {
        Challenge::Absent => "none",
        Challenge::Bare => "Negotiate",
        Challenge::Token(_) => "Negotiate <token>",
        Challenge::Malformed => "Negotiate <not base64>",
    }
}

fn lost(context: &TlsContext, e: &(dyn std::error::Error + 'static)) -> Error {
    if let Some(t) = find_tls_error(e) {
        return Error::Tls {
            failure: TlsFailure::from_rustls(&t).refine(context),
            context: Box::new(context.clone()),
        };
    }
    let text = chain_text(e);
    let reason = if text.contains("close_notify") {
        "the gateway closed the connection abruptly (it stopped or crashed, or gave up on \
         this client when a keepalive went unanswered)"
            .to_owned()
    } else {
        text.strip_prefix("connection error: ")
            .unwrap_or(&text)
            .to_owned()
    };
    Error::ConnectionLost {
        server: context.server.clone(),
        reason,
    }
}
