//! The synthetic dataset: generated from a seed and written straight into
//! the server's SQLite database through mirage's bulk importer, before the
//! server starts. What the load phase needs to address it (names, tokens,
//! ids, memberships) stays in memory.

use std::{collections::HashSet, path::Path, time::Instant};

use anyhow::{Context, Result, anyhow, ensure};
use mirage::{
    auth,
    domain::hashtags,
    store::{
        StoreError,
        accounts::NewUser,
        posts::VoteKind,
        rooms::{NewRoom, Retention},
        sqlite::SqliteStore,
    },
};
use rand::{Rng, SeedableRng, rngs::StdRng, seq::SliceRandom};
use serde::Serialize;

/// The password of every generated user (and of every private room).
pub const PASSWORD: &str = "bench-password";
/// Rows per transaction while loading.
const BATCH_ROWS: usize = 20_000;
const PUBLIC_ROOMS: usize = 5;
const PUBLIC_ROOM_MEMBERS: usize = 1_000;
const DAY: i64 = 86_400;

#[derive(Debug, Clone, Serialize)]
pub struct Sizes {
    pub users: usize,
    pub posts: usize,
    pub votes_per_post: f64,
    pub replies_per_post: f64,
    pub sessions: usize,
    pub private_rooms: usize,
    pub inbox_messages: usize,
    pub seed: u64,
}

/// What was written, as counted while writing.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Loaded {
    pub users: u64,
    pub follows: u64,
    pub posts: u64,
    pub post_tags: u64,
    pub votes: u64,
    pub replies: u64,
    pub sessions: u64,
    pub rooms: u64,
    pub room_members: u64,
    pub room_messages: u64,
    pub inbox_messages: u64,
    pub rows: u64,
    pub load_secs: f64,
    pub rows_per_sec: f64,
    pub recount_secs: f64,
    pub counters_corrected: u64,
}

/// A user with a session the load phase can act as.
#[derive(Debug, Clone)]
pub struct SessionUser {
    pub id: i64,
    pub token: String,
    /// Ids of users this one follows (so follow targets can be picked fresh).
    pub follows: HashSet<i64>,
}

/// Everything the scenarios need to address the loaded data.
pub struct Dataset {
    pub usernames: Vec<String>,
    /// `authors[i]` wrote post `i + 1` (ids are dense from 1 in a fresh database).
    pub authors: Vec<u32>,
    /// Users weighted by how much they post: `get_posts` picks from this.
    pub poster_weights: Skewed,
    /// Users weighted by how many follow them (the follow graph's skew):
    /// `get_followers` picks from this.
    pub popularity: Skewed,
    pub posts_with_replies: Vec<i64>,
    /// Voters in the load phase; no loaded vote is theirs, so every
    /// (session user, post) pair starts unvoted.
    pub sessions: Vec<SessionUser>,
    /// (room id, index into `sessions`) for members of public rooms.
    pub public_memberships: Vec<(i64, usize)>,
    pub tags: Vec<String>,
    pub tag_weights: Skewed,
    pub loaded: Loaded,
}

impl Dataset {
    pub fn posts(&self) -> i64 {
        self.authors.len() as i64
    }
}

/// Sampling by rank from a power law (Zipf-like): rank `r` has weight
/// `1 / (r + 1)^exponent`; ranks map to a seeded shuffle of the items, so
/// the heavy items are spread over the id space.
#[derive(Debug, Clone)]
pub struct Skewed {
    cumulative: Vec<f64>,
    items: Vec<usize>,
}

impl Skewed {
    pub fn new(n: usize, exponent: f64, rng: &mut impl Rng) -> Self {
        let mut total = 0.0;
        let cumulative = (0..n)
            .map(|r| {
                total += 1.0 / ((r + 1) as f64).powf(exponent);
                total
            })
            .collect();
        let mut items: Vec<usize> = (0..n).collect();
        items.shuffle(rng);
        Skewed { cumulative, items }
    }

    /// An index in `0..n`.
    pub fn sample(&self, rng: &mut impl Rng) -> usize {
        let total = *self.cumulative.last().unwrap_or(&1.0);
        let x = rng.random_range(0.0..total);
        let rank = self.cumulative.partition_point(|&c| c <= x);
        self.items[rank.min(self.items.len() - 1)]
    }
}

const WORDS: &[&str] = &[
    "the", "a", "and", "to", "of", "in", "is", "it", "that", "for", "on", "with", "this", "was",
    "just", "really", "today", "new", "good", "time", "people", "think", "know", "love", "great",
    "coffee", "morning", "weekend", "music", "game", "city", "train", "rain", "sun", "book",
    "friends", "work", "code", "bug", "release", "photo", "walk", "dinner", "finally", "again",
    "never", "always", "why", "how", "maybe", "tomorrow", "night", "story", "idea", "team",
];

const TAG_ROOTS: &[&str] = &[
    "rust", "news", "music", "photo", "travel", "food", "sports", "tech", "art", "books", "movies",
    "gaming", "science", "nature", "politics", "fashion", "fitness", "coffee", "dev", "memes",
];

/// Text of `min..max` characters from the word list, with `tags` appended as hashtags.
pub fn sentence(rng: &mut impl Rng, min: usize, max: usize, tags: &[&str]) -> String {
    let target = rng.random_range(min..max);
    let mut text = String::with_capacity(target + 40);
    while text.len() < target {
        if !text.is_empty() {
            text.push(' ');
        }
        text.push_str(WORDS[rng.random_range(0..WORDS.len())]);
    }
    for tag in tags {
        text.push_str(" #");
        text.push_str(tag);
    }
    text
}

/// Builds the tag vocabulary: roots and numbered variants (`rust`, `rust2`, …).
fn tag_vocabulary() -> Vec<String> {
    (0..25)
        .flat_map(|n| {
            TAG_ROOTS.iter().map(move |root| {
                if n == 0 {
                    root.to_string()
                } else {
                    format!("{root}{n}")
                }
            })
        })
        .collect()
}

/// Picks 0–3 distinct tags, skewed toward the popular ones.
pub fn pick_tags<'a>(ds_tags: &'a [String], weights: &Skewed, rng: &mut impl Rng) -> Vec<&'a str> {
    let n = match rng.random_range(0..10) {
        0..=2 => 0,
        3..=6 => 1,
        7..=8 => 2,
        _ => 3,
    };
    let mut tags: Vec<&str> = Vec::with_capacity(n);
    for _ in 0..n {
        let tag = ds_tags[weights.sample(rng)].as_str();
        if !tags.contains(&tag) {
            tags.push(tag);
        }
    }
    tags
}

fn store_err(e: StoreError) -> anyhow::Error {
    anyhow!("store: {e}")
}

/// Creates the database in `data_dir` and fills it. Blocking: run it off the async workers.
pub fn load(data_dir: &Path, sizes: &Sizes, password_hash: &str) -> Result<(SqliteStore, Dataset)> {
    ensure!(sizes.users >= 300, "--users must be at least 300");
    ensure!(sizes.posts >= 1_000, "--posts must be at least 1000");
    ensure!(
        sizes.sessions <= sizes.users / 2,
        "--sessions must be at most half of --users"
    );
    let store = SqliteStore::open(&data_dir.join("mirage.db"))
        .map_err(store_err)
        .context("opening the database")?;
    let mut rng = StdRng::seed_from_u64(sizes.seed);
    let now = chrono::Utc::now().timestamp();
    let started = Instant::now();
    let mut loaded = Loaded::default();
    let mut import = store.bulk_import(BATCH_ROWS).map_err(store_err)?;

    // Users: ids are dense from 1 in a fresh database; index i is id i + 1.
    let usernames: Vec<String> = (1..=sizes.users).map(|i| format!("user{i:06}")).collect();
    for (i, name) in usernames.iter().enumerate() {
        let created = now - 120 * DAY + (i as i64 * 30 * DAY / sizes.users as i64);
        let id = import
            .user(
                &NewUser {
                    username: name.clone(),
                    email: format!("{name}@bench.example"),
                    password_hash: password_hash.to_owned(),
                    avatar_url: format!("https://img.bench.example/{name}.png"),
                    description: sentence(&mut rng, 20, 120, &[]),
                },
                created,
            )
            .map_err(store_err)?;
        ensure!(
            id == i as i64 + 1,
            "user ids are not dense: a fresh data dir is needed"
        );
    }
    loaded.users = sizes.users as u64;
    let user_id = |index: usize| index as i64 + 1;

    // Session users: a random sample; they never vote in the loaded data.
    let mut order: Vec<usize> = (0..sizes.users).collect();
    order.shuffle(&mut rng);
    let session_indexes: Vec<usize> = order[..sizes.sessions].to_vec();
    let is_session: HashSet<usize> = session_indexes.iter().copied().collect();
    let mut sessions = Vec::with_capacity(sizes.sessions);
    for &i in &session_indexes {
        let token = auth::new_token();
        import
            .session(user_id(i), auth::hash_token(&token), now - DAY)
            .map_err(store_err)?;
        sessions.push(SessionUser {
            id: user_id(i),
            token,
            follows: HashSet::new(),
        });
    }
    loaded.sessions = sizes.sessions as u64;
    let session_slot: std::collections::HashMap<usize, usize> = session_indexes
        .iter()
        .enumerate()
        .map(|(slot, &i)| (i, slot))
        .collect();

    // Follows: each user follows 20–200 others (log-uniform), picked by a
    // power law of popularity, so a few celebrities gain thousands of followers.
    let popularity = Skewed::new(sizes.users, 1.0, &mut rng);
    for follower in 0..sizes.users {
        let want = (20.0f64 * 10f64.powf(rng.random_range(0.0..1.0))) as usize;
        let want = want.min(sizes.users - 1);
        let mut chosen = HashSet::with_capacity(want);
        for _ in 0..want * 4 {
            if chosen.len() >= want {
                break;
            }
            let followee = popularity.sample(&mut rng);
            if followee != follower && chosen.insert(followee) {
                let at = now - rng.random_range(DAY..90 * DAY);
                if import
                    .follow(user_id(follower), user_id(followee), at)
                    .map_err(store_err)?
                {
                    loaded.follows += 1;
                }
            }
        }
        if let Some(&slot) = session_slot.get(&follower) {
            sessions[slot].follows = chosen.iter().map(|&i| user_id(i)).collect();
        }
    }

    // Posts: authors by a power law, times over the past 90 days with a
    // growing rate (the newest minutes ago), content 40–280 characters.
    let tags = tag_vocabulary();
    let tag_weights = Skewed::new(tags.len(), 1.1, &mut rng);
    let poster_weights = Skewed::new(sizes.users, 0.9, &mut rng);
    let mut authors = Vec::with_capacity(sizes.posts);
    let mut post_times = Vec::with_capacity(sizes.posts);
    for n in 0..sizes.posts {
        let author = poster_weights.sample(&mut rng);
        let remaining = 1.0 - n as f64 / sizes.posts as f64;
        let at = now - (90.0 * DAY as f64 * remaining.powf(1.3)) as i64;
        let picked = pick_tags(&tags, &tag_weights, &mut rng);
        let content = sentence(&mut rng, 40, 260, &picked);
        let id = import
            .post(user_id(author), &content, &hashtags::extract(&content), at)
            .map_err(store_err)?;
        ensure!(id == n as i64 + 1, "post ids are not dense");
        loaded.post_tags += picked.len() as u64;
        authors.push(author as u32);
        post_times.push(at);
    }
    loaded.posts = sizes.posts as u64;

    // Votes by users without a session, never on their own posts, 80% up.
    let voters: Vec<usize> = (0..sizes.users)
        .filter(|i| !is_session.contains(i))
        .collect();
    let votes = (sizes.posts as f64 * sizes.votes_per_post) as usize;
    for _ in 0..votes {
        // Recent posts draw more votes: the square skews toward high ids.
        let post = ((1.0 - rng.random_range(0.0f64..1.0).powi(2)) * sizes.posts as f64) as usize;
        let post = post.min(sizes.posts - 1);
        let voter = voters[rng.random_range(0..voters.len())];
        if voter == authors[post] as usize {
            continue;
        }
        let kind = if rng.random_bool(0.8) {
            VoteKind::Up
        } else {
            VoteKind::Down
        };
        match import.vote(user_id(voter), post as i64 + 1, kind) {
            Ok(()) => loaded.votes += 1,
            // The same voter drew the same post again: the draw is skipped.
            Err(StoreError::Conflict(_)) => {}
            Err(e) => return Err(store_err(e)),
        }
    }

    // Replies: about a third nested under an earlier reply of the same post.
    let replies = (sizes.posts as f64 * sizes.replies_per_post) as usize;
    let mut recent_replies: Vec<(i64, i64)> = Vec::new();
    let mut with_replies = HashSet::new();
    for _ in 0..replies {
        let author = user_id(rng.random_range(0..sizes.users));
        let (post, parent) = if !recent_replies.is_empty() && rng.random_bool(0.3) {
            let (post, reply) = recent_replies[rng.random_range(0..recent_replies.len())];
            (post, Some(reply))
        } else {
            let post = rng.random_range(0..sizes.posts);
            (post as i64 + 1, None)
        };
        let at = post_times[post as usize - 1] + rng.random_range(60..DAY);
        let content = sentence(&mut rng, 10, 200, &[]);
        let id = import
            .reply(author, post, parent, &content, at.min(now))
            .map_err(store_err)?;
        with_replies.insert(post);
        if recent_replies.len() < 10_000 {
            recent_replies.push((post, id));
        } else {
            let slot = rng.random_range(0..recent_replies.len());
            recent_replies[slot] = (post, id);
        }
        loaded.replies += 1;
    }

    // Rooms: public ones with many members (half of the session users among
    // them), private ones with a few; every room holds fresh messages.
    let retention = Retention {
        ttl_secs: 1_800.0,
        max_messages: 100,
    };
    let mut public_memberships = Vec::new();
    let private_rooms = sizes.private_rooms;
    for r in 0..PUBLIC_ROOMS + private_rooms {
        let is_private = r >= PUBLIC_ROOMS;
        let creator = rng.random_range(0..sizes.users);
        let room_id = import
            .room(
                &NewRoom {
                    name: if is_private {
                        format!("private-{r}")
                    } else {
                        format!("lobby-{r}")
                    },
                    is_private,
                    password_hash: is_private.then(|| password_hash.to_owned()),
                    creator: user_id(creator),
                },
                now - 30 * DAY,
            )
            .map_err(store_err)?;
        loaded.rooms += 1;
        loaded.room_members += 1;
        let mut members = vec![creator];
        if !is_private {
            for (slot, &i) in session_indexes.iter().enumerate() {
                if i == creator || rng.random_bool(0.5) {
                    if import
                        .member(room_id, user_id(i), now - DAY)
                        .map_err(store_err)?
                    {
                        loaded.room_members += 1;
                    }
                    members.push(i);
                    public_memberships.push((room_id, slot));
                }
            }
        }
        let others = if is_private {
            rng.random_range(5..50)
        } else {
            PUBLIC_ROOM_MEMBERS
        };
        for _ in 0..others {
            let i = rng.random_range(0..sizes.users);
            if is_session.contains(&i) {
                continue;
            }
            if import
                .member(room_id, user_id(i), now - DAY)
                .map_err(store_err)?
            {
                loaded.room_members += 1;
                members.push(i);
            }
        }
        // Up to the 100 retained, sent over the last five minutes (they expire after 30).
        let count = rng.random_range(60..=100);
        let start = chrono::Utc::now().timestamp_micros() as f64 / 1e6 - 300.0;
        for m in 0..count {
            let author = members[rng.random_range(0..members.len())];
            let text = sentence(&mut rng, 5, 160, &[]);
            import
                .room_message(
                    room_id,
                    user_id(author),
                    &text,
                    start + m as f64 * 3.0,
                    retention,
                )
                .map_err(store_err)?;
            loaded.room_messages += 1;
        }
    }

    // Direct messages: half of them involve a session user, so inboxes are not empty.
    for _ in 0..sizes.inbox_messages {
        let sender = rng.random_range(0..sizes.users);
        let recipient = if rng.random_bool(0.5) {
            session_indexes[rng.random_range(0..session_indexes.len())]
        } else {
            rng.random_range(0..sizes.users)
        };
        let text = sentence(&mut rng, 10, 300, &[]);
        let at = now - rng.random_range(0..30 * DAY);
        import
            .inbox_message(user_id(sender), user_id(recipient), &text, at)
            .map_err(store_err)?;
        loaded.inbox_messages += 1;
    }
    import.finish().map_err(store_err)?;

    loaded.rows = loaded.users
        + loaded.follows
        + loaded.posts
        + loaded.post_tags
        + loaded.votes
        + loaded.replies
        + loaded.sessions
        + loaded.rooms
        + loaded.room_members
        + loaded.room_messages
        + loaded.inbox_messages;
    loaded.load_secs = started.elapsed().as_secs_f64();
    loaded.rows_per_sec = loaded.rows as f64 / loaded.load_secs;

    let mut posts_with_replies: Vec<i64> = with_replies.into_iter().collect();
    posts_with_replies.sort_unstable();
    Ok((
        store,
        Dataset {
            usernames,
            authors,
            poster_weights,
            popularity,
            posts_with_replies,
            sessions,
            public_memberships,
            tags,
            tag_weights,
            loaded,
        },
    ))
}
