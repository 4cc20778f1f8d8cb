//! Authentication: the `AuthUser` extractor, session tokens, password hashing.

use std::{
    cell::Cell,
    sync::{Arc, Mutex, mpsc},
    thread,
    time::{Duration, Instant},
};

use argon2::{
    Algorithm, Argon2, Params, PasswordHash, PasswordVerifier, Version,
    password_hash::PasswordHasher as _,
};
use axum::{
    extract::FromRequestParts,
    http::{HeaderMap, HeaderValue, StatusCode, request::Parts},
    response::{IntoResponse, Response},
};
use sha2::{Digest, Sha256};
use tokio::sync::oneshot;

use crate::{
    app::AppState,
    error::{ApiError, ApiResult},
    store::accounts::UserRef,
};

/// A caller with a valid session. A handler taking this cannot run unauthenticated.
#[derive(Debug, Clone)]
pub struct AuthUser {
    pub id: i64,
    pub username: String,
    /// Hash of the token this request came with (to keep or end this session).
    pub token_hash: [u8; 32],
}

impl FromRequestParts<AppState> for AuthUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> ApiResult<Self> {
        let token = header_token(&parts.headers)
            .ok_or_else(|| ApiError::unauthorized("missing Authorization token"))?;
        authenticate(state, token).await
    }
}

/// Resolves a raw token to its user, or 401.
pub async fn authenticate(state: &AppState, token: &str) -> ApiResult<AuthUser> {
    let token_hash = hash_token(token);
    let user: UserRef = state
        .store
        .session_user(token_hash)
        .await?
        .ok_or_else(|| ApiError::unauthorized("invalid or expired token"))?;
    // Outside `unauthorized_if_session_ended` (WebSockets) there is no flag.
    let _ = AUTHENTICATED.try_with(|authenticated| authenticated.set(true));
    Ok(AuthUser {
        id: user.id,
        username: user.username,
        token_hash,
    })
}

tokio::task_local! {
    /// Whether the request being served has passed authentication (set by
    /// `authenticate`) while `unauthorized_if_session_ended` serves it.
    static AUTHENTICATED: Cell<bool>;
}

/// Serves a request (`serve`), and answers 401 instead of its 403, 404 or
/// 500 when the request passed authentication and its session (`authorization`,
/// the request's header) has ended since: a write that passed just before its
/// account was deleted finds its user row, its room membership or its own
/// posts gone, and the next request with that token would get this 401
/// anyway. A request that did not authenticate (a public read, a login, a
/// client sending a stale token along) keeps its answer. Costs nothing on
/// other answers (a task-local flag, no allocation).
pub async fn unauthorized_if_session_ended(
    state: &AppState,
    authorization: Option<HeaderValue>,
    serve: impl Future<Output = Response>,
) -> Response {
    let (response, authenticated) = AUTHENTICATED
        .scope(Cell::new(false), async {
            let response = serve.await;
            (response, AUTHENTICATED.with(Cell::get))
        })
        .await;
    if !authenticated
        || !matches!(
            response.status(),
            StatusCode::FORBIDDEN | StatusCode::NOT_FOUND | StatusCode::INTERNAL_SERVER_ERROR
        )
    {
        return response;
    }
    let token = authorization
        .as_ref()
        .and_then(|value| value.to_str().ok())
        .and_then(authorization_token);
    match token {
        Some(token)
            if matches!(
                authenticate(state, token).await,
                Err(ApiError::Unauthorized(_))
            ) =>
        {
            tracing::info!("the caller's session ended during the request; answered 401");
            ApiError::unauthorized("invalid or expired token").into_response()
        }
        _ => response,
    }
}

/// The token of the `Authorization` header, with or without `Bearer `.
pub fn header_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    authorization_token(value)
}

/// The token in an `Authorization` value: `<token>` or `Bearer <token>`
/// (scheme in any case), surrounding white space ignored; None when empty.
pub fn authorization_token(value: &str) -> Option<&str> {
    let value = value.trim();
    let token = match value.split_once(' ') {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("bearer") => rest.trim(),
        _ => value,
    };
    (!token.is_empty()).then_some(token)
}

/// A new random session token (UUID v4).
pub fn new_token() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// Only this hash of a token is stored, so a leaked database holds no usable tokens.
pub fn hash_token(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// New password hashes: Argon2id with 7 MiB of memory, 5 passes and one
/// lane, one of the configurations OWASP's Password Storage Cheat Sheet
/// lists as equivalent in defence to 19 MiB and 2 passes (argon2's
/// default), trading memory for passes. Two hashes at once held 38 MiB
/// and took a benchmark run's peak RSS over 256 MiB; this takes 14 MiB for
/// about the same CPU. A stored hash keeps its own parameters, so hashes
/// made with the old ones still verify (and `verify` reads them from the
/// hash).
const HASH_MEMORY_KIB: u32 = 7 * 1024;
const HASH_PASSES: u32 = 5;

fn new_hash_argon2() -> ApiResult<Argon2<'static>> {
    let params = Params::new(HASH_MEMORY_KIB, HASH_PASSES, 1, None).map_err(ApiError::internal)?;
    Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
}

/// Argon2id hashing on a few dedicated threads of low CPU priority.
///
/// The threads bound how many hashes run at once (each takes 7 MiB), and
/// their priority keeps a flood of logins from taking the CPU that every
/// other request needs: hashing gets what the rest of the server leaves.
#[derive(Clone)]
pub struct Passwords {
    jobs: mpsc::Sender<HashJob>,
}

type HashJob = Box<dyn FnOnce() + Send>;

/// Hashing threads' niceness (0 is normal, 19 the lowest priority): at 10 a
/// busy hashing thread gets about a tenth of the CPU a request worker gets.
/// On Linux the threads are also put in SCHED_IDLE, which ignores niceness.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const HASHING_NICENESS: i32 = 10;

impl Passwords {
    pub fn new(threads: usize) -> Self {
        let (jobs, queue) = mpsc::channel::<HashJob>();
        let queue = Arc::new(Mutex::new(queue));
        for n in 0..threads.max(1) {
            let queue = queue.clone();
            let spawned = thread::Builder::new()
                .name(format!("argon2-{n}"))
                .spawn(move || {
                    lower_this_threads_priority();
                    loop {
                        // The lock is held only while waiting for a job.
                        let job = match queue.lock() {
                            Ok(queue) => queue.recv(),
                            Err(_) => return,
                        };
                        match job {
                            Ok(job) => run_then_rest(job),
                            Err(_) => return,
                        }
                    }
                });
            if let Err(err) = spawned {
                tracing::error!(%err, "starting a password hashing thread failed");
            }
        }
        Passwords { jobs }
    }

    /// Runs `work` on a hashing thread, unless the caller has gone away by then.
    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> ApiResult<T> {
        let (answer, answered) = oneshot::channel();
        let job: HashJob = Box::new(move || {
            if !answer.is_closed() {
                let _ = answer.send(work());
            }
        });
        self.jobs
            .send(job)
            .map_err(|_| ApiError::internal("password hashing stopped"))?;
        answered
            .await
            .map_err(|_| ApiError::internal("password hashing stopped"))
    }

    pub async fn hash(&self, password: &str) -> ApiResult<String> {
        let password = password.to_owned();
        self.run(move || {
            new_hash_argon2()?
                .hash_password(password.as_bytes())
                .map(|hash| hash.to_string())
                .map_err(ApiError::internal)
        })
        .await?
    }

    /// True when `password` matches `stored`; a malformed hash never matches.
    pub async fn verify(&self, password: &str, stored: &str) -> ApiResult<bool> {
        let password = password.to_owned();
        let stored = stored.to_owned();
        self.run(move || {
            PasswordHash::new(&stored)
                .map(|hash| {
                    // The algorithm, version and costs come from `hash`.
                    Argon2::default()
                        .verify_password(password.as_bytes(), &hash)
                        .is_ok()
                })
                .unwrap_or(false)
        })
        .await
    }
}

/// Runs a hashing job, then rests if the job was starved of CPU.
fn run_then_rest(job: HashJob) {
    let (wall, cpu) = (Instant::now(), this_threads_cpu_time());
    job();
    let used = cpu
        .zip(this_threads_cpu_time())
        .map(|(before, after)| after.saturating_sub(before));
    if let Some(rest) = used.and_then(|cpu| rest_after(wall.elapsed(), cpu)) {
        thread::sleep(rest);
    }
}

/// How long a hashing thread rests after a hash that took `wall` time and
/// `cpu` of it on a core. A hash that got less than half of a core ran
/// beside a busy server, in its idle moments; even there it slows the
/// other requests by far more than the CPU it uses (under reads at 64
/// connections a login took as much from them as 8 of its own CPU time),
/// so the thread rests for twice the time it waited and logins slow
/// down to about a third. A hash that had the CPU it wanted rests not at
/// all: logins alone run at full speed.
fn rest_after(wall: Duration, cpu: Duration) -> Option<Duration> {
    const REST_PER_WAIT: u32 = 2;
    const LONGEST_REST: Duration = Duration::from_secs(1);
    (wall > cpu * 2).then(|| ((wall - cpu) * REST_PER_WAIT).min(LONGEST_REST))
}

/// CPU time the calling thread has used (None where it cannot be read).
fn this_threads_cpu_time() -> Option<Duration> {
    // libc is a dependency on Linux (glibc) only, as for the priority below.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let mut used = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: clock_gettime writes only the timespec it is given.
        let read = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut used) } == 0;
        read.then(|| Duration::new(used.tv_sec as u64, used.tv_nsec as u32))
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    None
}

/// On Linux niceness and scheduling policy are per thread: this lowers only
/// the calling thread. SCHED_IDLE runs the thread only when a core would
/// otherwise idle: with 8 connections logging in, reads at 64 connections
/// kept 81 / 78 / 82 / 69% of their throughput against 75 / 65 / 54% at
/// niceness 10 (docs/PERFORMANCE.md). Under a load that leaves no idle
/// time, logins slow down rather than the rest.
fn lower_this_threads_priority() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: setpriority with who = 0 changes only the calling thread.
    unsafe {
        if libc::setpriority(libc::PRIO_PROCESS, 0, HASHING_NICENESS) != 0 {
            tracing::debug!("lowering the hashing thread's priority failed");
        }
        let param = libc::sched_param { sched_priority: 0 };
        if libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) != 0 {
            tracing::debug!("moving the hashing thread to SCHED_IDLE failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_hash_verifies_only_its_password() {
        let passwords = Passwords::new(2);
        let hash = passwords.hash("correct horse").await.unwrap();
        assert!(hash.starts_with("$argon2id$"));
        assert!(passwords.verify("correct horse", &hash).await.unwrap());
        assert!(!passwords.verify("wrong horse", &hash).await.unwrap());
        assert!(!passwords.verify("x", "not a hash").await.unwrap());
    }

    #[tokio::test]
    async fn new_hashes_take_7_mib_and_hashes_with_the_old_costs_still_verify() {
        let passwords = Passwords::new(1);
        let hash = passwords.hash("correct horse").await.unwrap();
        assert!(hash.starts_with("$argon2id$v=19$m=7168,t=5,p=1$"), "{hash}");
        // Made with argon2's default costs (19 MiB, 2 passes), as hashes
        // stored before this change were.
        let old = Argon2::default()
            .hash_password(b"correct horse")
            .unwrap()
            .to_string();
        assert!(old.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{old}");
        assert!(passwords.verify("correct horse", &old).await.unwrap());
        assert!(!passwords.verify("wrong horse", &old).await.unwrap());
    }

    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[tokio::test]
    async fn hashing_threads_run_at_low_priority() {
        let passwords = Passwords::new(1);
        passwords.hash("started").await.unwrap();
        let mut seen = 0;
        for task in std::fs::read_dir("/proc/self/task").unwrap() {
            let dir = task.unwrap().path();
            let name = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
            if name.trim() != "argon2-0" {
                continue;
            }
            let stat = std::fs::read_to_string(dir.join("stat")).unwrap();
            // Fields after the parenthesised name; niceness is field 19 of stat.
            let after_name = &stat[stat.rfind(')').unwrap() + 2..];
            let fields: Vec<&str> = after_name.split(' ').collect();
            let nice: i32 = fields[16].parse().unwrap();
            assert_eq!(nice, HASHING_NICENESS);
            // The policy is field 41 of stat.
            let policy: i32 = fields[38].parse().unwrap();
            assert_eq!(policy, libc::SCHED_IDLE);
            seen += 1;
        }
        assert!(seen >= 1);
    }

    #[test]
    fn a_starved_hash_rests_twice_its_wait_and_a_fed_one_not_at_all() {
        let ms = Duration::from_millis;
        assert_eq!(rest_after(ms(5), ms(5)), None);
        assert_eq!(rest_after(ms(9), ms(5)), None);
        assert_eq!(rest_after(ms(105), ms(5)), Some(ms(200)));
        assert_eq!(rest_after(ms(2_000), ms(5)), Some(ms(1_000)));
    }

    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn a_threads_cpu_time_counts_its_work_and_not_its_sleep() {
        let before = this_threads_cpu_time().unwrap();
        thread::sleep(Duration::from_millis(50));
        let slept = this_threads_cpu_time().unwrap() - before;
        assert!(slept < Duration::from_millis(25), "{slept:?}");
        let spinning = this_threads_cpu_time().unwrap();
        let give_up = Instant::now() + Duration::from_secs(10);
        while this_threads_cpu_time().unwrap() - spinning < Duration::from_millis(20) {
            assert!(
                Instant::now() < give_up,
                "spinning did not count as CPU time"
            );
        }
    }

    #[test]
    fn tokens_are_uuid_v4_and_hash_stably() {
        let token = new_token();
        assert_eq!(uuid::Uuid::parse_str(&token).unwrap().get_version_num(), 4);
        assert_eq!(hash_token(&token), hash_token(&token));
        assert_ne!(hash_token(&token), hash_token(&new_token()));
    }

    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Any header text parses without panicking into either nothing or
        /// a non-empty token without surrounding white space.
        #[test]
        fn any_authorization_value_parses_to_a_trimmed_token_or_none(
            value in prop_oneof![any::<String>(), "[ \\t]{0,2}(?i:bearer)[ \\t]{0,3}\\PC{0,12}"],
        ) {
            if let Some(token) = authorization_token(&value) {
                prop_assert!(!token.is_empty());
                prop_assert_eq!(token.trim(), token);
                prop_assert!(value.contains(token));
            } else {
                prop_assert!(value.trim().is_empty(), "{value:?} lost its token");
            }
        }

        /// A real token comes back unchanged, bare or after `Bearer` in any
        /// case and spacing, and through a real header map.
        #[test]
        fn a_session_token_round_trips_bare_or_as_bearer(
            scheme in "[bB][eE][aA][rR][eE][rR]",
            before in "[ \t]{0,3}", gap in " [ \t]{0,3}", after in "[ \t]{0,3}",
        ) {
            let token = new_token();
            let bare = format!("{before}{token}{after}");
            prop_assert_eq!(authorization_token(&bare), Some(token.as_str()));
            let value = format!("{before}{scheme}{gap}{token}{after}");
            prop_assert_eq!(authorization_token(&value), Some(token.as_str()));
            let mut headers = HeaderMap::new();
            headers.insert(axum::http::header::AUTHORIZATION, value.parse().unwrap());
            prop_assert_eq!(header_token(&headers), Some(token.as_str()));
        }
    }
}
