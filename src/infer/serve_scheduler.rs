//! The generation thread of `syncoder serve`: continuous batching over `RunningBatch`.
//!
//! Each iteration admits waiting requests while fewer than `max_num_seqs` run, drops the ones
//! whose client left (a closed reply channel or stream), whose deadline passed, or all of them
//! once the shutdown grace is over, then advances every running sequence by one token and
//! delivers the ones that finished. Requests wait in a bounded queue (`max_queue`); a full queue
//! is the handler's 429, never unbounded memory.

use super::engine::{FinishReason, Generated, Next};
use super::running::RunningBatch;
use super::server::{ApiError, ChatRequest, ChatService, Outcome};
use super::ChatFormat;
use crate::model::KvPlacement;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc as tmpsc, oneshot};

/// How much the server takes on.
#[derive(Clone, Debug)]
pub struct ServeLimits {
    /// Sequences generating together.
    pub max_num_seqs: usize,
    /// Requests waiting for a place in the batch; more get 429.
    pub max_queue: usize,
    /// From arrival to the last token; a request past it gets 503.
    pub request_timeout: Duration,
    /// Largest request body accepted (413 beyond).
    pub max_body_bytes: usize,
    /// After SIGTERM, in-flight requests may finish for this long; then they are cancelled.
    pub shutdown_grace: Duration,
}

impl Default for ServeLimits {
    fn default() -> Self {
        Self {
            max_num_seqs: 16,
            max_queue: 256,
            request_timeout: Duration::from_secs(600),
            max_body_bytes: 2 << 20,
            shutdown_grace: Duration::from_secs(30),
        }
    }
}

/// A piece of a streamed reply.
#[derive(Debug)]
pub enum Chunk {
    Delta(String),
    Done(Outcome),
    Failed(ApiError),
}

/// Where a request's result goes.
pub enum Sink {
    Reply(oneshot::Sender<Result<Outcome, ApiError>>),
    Stream(tmpsc::UnboundedSender<Chunk>),
}

impl Sink {
    /// The client is gone (its handler, or its stream, was dropped).
    fn is_closed(&self) -> bool {
        match self {
            Sink::Reply(tx) => tx.is_closed(),
            Sink::Stream(tx) => tx.is_closed(),
        }
    }

    fn deliver(self, result: Result<Outcome, ApiError>) {
        match self {
            Sink::Reply(tx) => {
                let _ = tx.send(result);
            }
            Sink::Stream(tx) => {
                let _ = tx.send(match result {
                    Ok(o) => Chunk::Done(o),
                    Err(e) => Chunk::Failed(e),
                });
            }
        }
    }
}

/// One request for the generation thread.
pub struct Work {
    pub req: ChatRequest,
    pub sink: Sink,
    pub arrived: Instant,
}

/// A running request: where its result goes, its text as it grows, its deadline.
struct Live {
    sink: Sink,
    text: TextState,
    deadline: Instant,
    prompt_tokens: usize,
}

/// The byte offset of the earliest stop string in `text`.
pub fn first_stop(text: &str, stop: &[String]) -> Option<usize> {
    stop.iter().filter_map(|s| text.find(s.as_str())).min()
}

/// One sequence's text as it grows: how much was streamed, and where a stop string cut it.
struct TextState {
    stop: Vec<String>,
    stream: Option<tmpsc::UnboundedSender<Chunk>>,
    /// Bytes of the decoded text already sent.
    sent: usize,
    /// The stop string's offset, once found.
    cut: Option<usize>,
}

impl TextState {
    /// After a new token: ends the sequence at a stop string (or when the client left), and
    /// streams what can no longer change — holding back an incomplete character and any tail
    /// that could still become a stop string.
    fn on_token(&mut self, format: &ChatFormat, tokens: &[u32]) -> Next {
        if self.stop.is_empty() && self.stream.is_none() {
            return Next::Continue;
        }
        let Ok(text) = format.decode(tokens) else {
            return Next::Continue;
        };
        if let Some(cut) = first_stop(&text, &self.stop) {
            self.cut = Some(cut);
            return Next::Stop;
        }
        let Some(tx) = &self.stream else {
            return Next::Continue;
        };
        let hold = self.stop.iter().map(|s| s.len().saturating_sub(1)).max().unwrap_or(0);
        let mut safe = text.len().saturating_sub(hold);
        while safe > 0 && !text.is_char_boundary(safe) {
            safe -= 1;
        }
        let ready = text[..safe].trim_end_matches('\u{FFFD}').len();
        if ready > self.sent {
            if tx.send(Chunk::Delta(text[self.sent..ready].to_string())).is_err() {
                return Next::Stop; // the client is gone
            }
            self.sent = ready;
        }
        Next::Continue
    }
}

/// Runs until every sender of `queue` is gone and the batch is empty. `cancel` set: every
/// running and waiting request is ended with a 503 (the shutdown grace is over).
pub fn generation_loop(service: Arc<ChatService>, queue: mpsc::Receiver<Work>, cancel: Arc<AtomicBool>) {
    let placement = KvPlacement::for_device(service.model.device());
    let mut batch: RunningBatch<Live> = RunningBatch::new(placement, service.context);
    let limits = &service.limits;
    let mut open = true;
    loop {
        while open && batch.len() < limits.max_num_seqs {
            let next = if batch.is_empty() {
                queue.recv().map_err(|_| mpsc::TryRecvError::Disconnected)
            } else {
                queue.try_recv()
            };
            match next {
                Ok(w) => admit(&service, &mut batch, w, &cancel),
                Err(mpsc::TryRecvError::Empty) => break,
                Err(mpsc::TryRecvError::Disconnected) => open = false,
            }
        }
        if batch.is_empty() {
            if open {
                continue;
            }
            return;
        }
        let now = Instant::now();
        let cancelling = cancel.load(Ordering::Relaxed);
        for s in batch.remove_where(|s| cancelling || s.tag.sink.is_closed() || now >= s.tag.deadline) {
            let generated = s.tokens().len();
            let live = s.tag;
            if live.sink.is_closed() {
                eprintln!("cancelled a request after {generated} tokens: the client is gone");
            } else {
                let why = ended_early(cancelling, limits);
                eprintln!("cancelled a request after {generated} tokens: {why}");
                live.sink.deliver(Err(why));
            }
        }
        if batch.is_empty() {
            continue;
        }
        let format = &service.format;
        let model = &service.model;
        let stepped = rayon::scope(|_| batch.step(model, &mut |live, tokens| live.text.on_token(format, tokens)));
        match stepped {
            Ok(done) => {
                for (live, g) in done {
                    finish(format, live, g);
                }
            }
            Err(e) => {
                let msg = format!("generation failed: {e:#}");
                for live in batch.clear() {
                    live.sink.deliver(Err(ApiError::Internal(msg.clone())));
                }
            }
        }
    }
}

/// Why a request was ended before it finished.
fn ended_early(cancelling: bool, limits: &ServeLimits) -> ApiError {
    if cancelling {
        ApiError::Unavailable("the server is shutting down".into())
    } else {
        ApiError::Unavailable(format!(
            "the request timed out after {} s (serve --request-timeout-s)",
            limits.request_timeout.as_secs()
        ))
    }
}

/// Puts a request into the batch, or answers it at once (client gone, deadline passed,
/// prompt too long).
fn admit(service: &ChatService, batch: &mut RunningBatch<Live>, w: Work, cancel: &AtomicBool) {
    if w.sink.is_closed() {
        return;
    }
    let deadline = w.arrived + service.limits.request_timeout;
    if Instant::now() >= deadline || cancel.load(Ordering::Relaxed) {
        w.sink
            .deliver(Err(ended_early(cancel.load(Ordering::Relaxed), &service.limits)));
        return;
    }
    let stream = match &w.sink {
        Sink::Stream(tx) => Some(tx.clone()),
        Sink::Reply(_) => None,
    };
    let live = Live {
        sink: w.sink,
        text: TextState {
            stop: w.req.stop.clone(),
            stream,
            sent: 0,
            cut: None,
        },
        deadline,
        prompt_tokens: w.req.ids.len(),
    };
    let seed = w.req.settings.sampling.seed;
    if let Err((live, e)) = batch.join(&service.model, live, w.req.ids, w.req.settings, seed) {
        live.sink.deliver(Err(ApiError::BadRequest(format!("{e:#}"))));
    }
}

/// Delivers a finished sequence: the text cut at a stop string, the rest of a stream.
fn finish(format: &ChatFormat, mut live: Live, g: Generated) {
    if live.sink.is_closed() {
        eprintln!(
            "cancelled a request after {} tokens: the client is gone",
            g.token_ids.len()
        );
        return;
    }
    let t = &mut live.text;
    let result = format
        .decode(&g.token_ids)
        .map_err(|e| ApiError::Internal(format!("{e:#}")))
        .map(|mut text| {
            if let Some(cut) = t.cut.or_else(|| first_stop(&text, &t.stop)) {
                text.truncate(cut);
            }
            let finish_reason = match (g.finish_reason, t.cut.is_some()) {
                (FinishReason::Stop, _) | (_, true) => "stop",
                (FinishReason::Length, false) => "length",
            };
            if let Some(tx) = &t.stream {
                if text.len() > t.sent {
                    let _ = tx.send(Chunk::Delta(text[t.sent..].to_string()));
                }
            }
            Outcome {
                text,
                finish_reason,
                prompt_tokens: live.prompt_tokens,
                completion_tokens: g.token_ids.len(),
            }
        });
    live.sink.deliver(result);
}
