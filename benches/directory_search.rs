//! Directory search benchmark (not a test): seeds N entries (default 500 000) into a
//! fresh database, then times a mix of searches as the search page and the compose
//! page's autocomplete make them, and prints p50/p95/p99/max, and p50/p95/p99 of
//! each kind of query.
//!
//! `cargo bench --bench directory_search` (SQLite in a temporary directory); with
//! `DIRECTMAIL_TEST_POSTGRES_URL` (or `DIRECTMAIL_BENCH_POSTGRES_URL`) set to
//! `postgres://…/postgres`, the same on a fresh PostgreSQL database.
//! `BENCH_ENTRIES` and `BENCH_QUERIES` (default 2000) size the run.
//!
//! `BENCH_DATABASE` keeps the seeded database between runs (seeding 500 000 entries
//! takes minutes): a database name (letters, digits, `_`) on that PostgreSQL server,
//! else a SQLite file's path. The first run creates and seeds it; a later run finds
//! it holding `BENCH_ENTRIES` entries, applies any new migration and only searches
//! (the same searches: the entries are generated again, not inserted). A database
//! holding another number of entries (an interrupted seeding) is refused: drop it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use directmail::db::Db;
use directmail::directory::{EntryInput, Scope, Viewer};
use directmail::store::directory::{self as store, Query};

mod common;
use common::{database, env_usize, kept_database};

/// xorshift64*: the same data on every run, without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn pick<'a, T>(&mut self, list: &'a [T]) -> &'a T {
        &list[self.below(list.len())]
    }
}

const FIRST: &[&str] = &[
    "James",
    "Mary",
    "John",
    "Patricia",
    "Robert",
    "Jennifer",
    "Michael",
    "Linda",
    "William",
    "Elizabeth",
    "David",
    "Barbara",
    "Richard",
    "Susan",
    "Joseph",
    "Jessica",
    "Thomas",
    "Sarah",
    "Charles",
    "Karen",
    "Christopher",
    "Nancy",
    "Daniel",
    "Lisa",
    "Matthew",
    "Betty",
    "Anthony",
    "Margaret",
    "Mark",
    "Sandra",
    "Donald",
    "Ashley",
    "Steven",
    "Kimberly",
    "Paul",
    "Emily",
    "Andrew",
    "Donna",
    "Joshua",
    "Michelle",
    "José",
    "María",
    "Zoë",
    "Renée",
    "François",
    "Chloé",
    "Mohammed",
    "Fatima",
    "Wei",
    "Mei",
    "Hiroshi",
    "Yuki",
    "Olga",
    "Dmitri",
    "Ana",
    "Luis",
];
const SYLLABLES: &[&str] = &[
    "an", "ber", "cal", "dor", "el", "fen", "gar", "hol", "is", "jor", "kel", "lin", "mar", "nor",
    "ols", "per", "quin", "ros", "sten", "tor", "ul", "van", "wes", "xan", "yor", "zel", "son",
    "berg", "ton", "ez", "ski", "ley", "man", "field", "wood",
];
const SPECIALTIES: &[(&str, &str)] = &[
    ("207Q00000X", "Family Medicine"),
    ("207R00000X", "Internal Medicine"),
    ("207RC0000X", "Cardiovascular Disease"),
    ("208000000X", "Pediatrics"),
    ("207V00000X", "Obstetrics & Gynecology"),
    ("2084P0800X", "Psychiatry"),
    ("207X00000X", "Orthopaedic Surgery"),
    ("207N00000X", "Dermatology"),
    ("207W00000X", "Ophthalmology"),
    ("2085R0202X", "Diagnostic Radiology"),
    ("207P00000X", "Emergency Medicine"),
    ("363L00000X", "Nurse Practitioner"),
    ("1223G0001X", "General Practice Dentistry"),
    ("152W00000X", "Optometrist"),
    ("225100000X", "Physical Therapist"),
    ("261QP2300X", "Primary Care Clinic"),
    ("291U00000X", "Clinical Medical Laboratory"),
    ("332B00000X", "Durable Medical Equipment"),
    ("3336C0003X", "Community/Retail Pharmacy"),
    ("101YM0800X", "Mental Health Counselor"),
];
const STATES: &[&str] = &["IL", "WI", "IN", "MI", "OH", "IA", "MO", "MN", "KY", "TN"];

fn npi_for(n: usize) -> String {
    let base = format!("{:09}", 100_000_000 + n);
    for check in 0..10 {
        let candidate = format!("{base}{check}");
        if directmail::domain::Npi::parse(&candidate).is_ok() {
            return candidate;
        }
    }
    unreachable!("one check digit fits")
}

fn word(rng: &mut Rng, parts: usize) -> String {
    let mut w = String::new();
    for _ in 0..parts {
        let syllable: &&str = rng.pick(SYLLABLES);
        w.push_str(syllable);
    }
    let mut c = w.chars();
    c.next()
        .map(|f| f.to_uppercase().collect::<String>() + c.as_str())
        .unwrap_or_default()
}

struct World {
    last: Vec<String>,
    orgs: Vec<String>,
    cities: Vec<(String, &'static str, String)>,
}

fn world(rng: &mut Rng) -> World {
    World {
        last: (0..20_000).map(|_| word(rng, 3)).collect(),
        orgs: (0..5_000)
            .map(|_| {
                format!(
                    "{} {}",
                    word(rng, 2),
                    rng.pick(&[
                        "Clinic",
                        "Medical Group",
                        "Health",
                        "Family Practice",
                        "Hospital"
                    ])
                )
            })
            .collect(),
        cities: (0..400)
            .map(|i| {
                (
                    word(rng, 2) + *rng.pick(&["ville", " City", "ton", " Falls", "burg"]),
                    STATES[i % STATES.len()],
                    format!("{:05}", 46_000 + i * 37),
                )
            })
            .collect(),
    }
}

fn entry(rng: &mut Rng, w: &World, n: usize) -> EntryInput {
    let first = rng.pick(FIRST);
    let last = rng.pick(&w.last);
    let org = rng.pick(&w.orgs);
    let (city, state, zip) = rng.pick(&w.cities);
    let (code, label) = rng.pick(SPECIALTIES);
    let domain = org.to_ascii_lowercase().replace(' ', "");
    let is_org = n.is_multiple_of(10);
    EntryInput {
        kind: if is_org {
            "organization"
        } else {
            "practitioner"
        }
        .into(),
        name: if is_org {
            org.clone()
        } else {
            format!("{first} {last}")
        },
        organization: if is_org { String::new() } else { org.clone() },
        npi: npi_for(n),
        specialties: vec![((*code).into(), (*label).into())],
        address_line: format!("{} Main St", 1 + n % 999),
        city: city.clone(),
        state: (*state).into(),
        zip: zip.clone(),
        phone: format!("(312) 555-{:04}", n % 10_000),
        addresses: vec![format!("u{n}@direct.{domain}.example")],
        ..EntryInput::default()
    }
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

#[tokio::main]
async fn main() {
    let entries = env_usize("BENCH_ENTRIES", 500_000);
    let queries = env_usize("BENCH_QUERIES", 2_000);
    let dir = tempfile::tempdir().unwrap();
    let (url, label) = match std::env::var("BENCH_DATABASE") {
        Ok(name) if !name.is_empty() => kept_database(&name).await,
        _ => database(dir.path(), "bench_dir").await,
    };
    let db = Db::connect(&url).await.unwrap();
    db.migrate().await.unwrap();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let w = world(&mut rng);

    let started = Instant::now();
    let now = 1_760_000_000;
    let held: i64 = sqlx::query_scalar("select count(*) from directory_entries")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    let mut done = 0;
    if held > 0 {
        assert_eq!(
            held as usize, entries,
            "BENCH_DATABASE holds {held} entries, not BENCH_ENTRIES={entries}: drop it"
        );
        // the same random draws as seeding, for the same searches afterwards
        for n in 0..entries {
            entry(&mut rng, &w, n);
        }
        done = entries;
    }
    while done < entries {
        let batch = (entries - done).min(5_000);
        let mut tx = db.begin().await.unwrap();
        for n in done..done + batch {
            let data = entry(&mut rng, &w, n).validate(now).unwrap();
            store::insert(&mut tx, Scope::Public, "import:bench", &data, None, now)
                .await
                .unwrap();
        }
        tx.commit().await.unwrap();
        done += batch;
    }
    if db.backend == directmail::db::Backend::Postgres {
        sqlx::query("analyze").execute(&db.pool).await.unwrap();
    }
    println!(
        "{label}: {} {entries} entries in {:.1} s",
        if held > 0 { "reused" } else { "seeded" },
        started.elapsed().as_secs_f64()
    );

    let viewer = Viewer {
        user_id: 1,
        org_id: Some(1),
    };
    let mut timings: Vec<(&'static str, Duration)> = Vec::new();
    for i in 0..queries {
        let last = rng.pick(&w.last).clone();
        let first = *rng.pick(FIRST);
        let org = rng.pick(&w.orgs).clone();
        let (city, _, zip) = rng.pick(&w.cities).clone();
        let (_, specialty) = *rng.pick(SPECIALTIES);
        let (kind, q): (&'static str, Query) = match i % 9 {
            0 => ("full last name", text(&last)),
            1 => (
                "first and last, any order",
                text(&format!("{last} {first}")),
            ),
            2 => ("3-letter prefix", text(&last[..3])),
            3 => ("first name, 2 letters", text(&first[..2])),
            4 => ("organization", text(&org)),
            5 => ("NPI", text(&npi_for(rng.below(entries)))),
            6 => (
                "specialty in a city",
                Query {
                    specialty: specialty.into(),
                    place: city.clone(),
                    ..Query::default()
                },
            ),
            7 => (
                "name prefix in a ZIP",
                Query {
                    text: last[..4].into(),
                    place: zip,
                    ..Query::default()
                },
            ),
            _ => ("address prefix", text(&format!("u{}", rng.below(entries)))),
        };
        let t = Instant::now();
        if i % 2 == 0 {
            store::search(&db, &viewer, &q, 26, 0).await.unwrap();
        } else {
            store::suggest(&db, &viewer, &q.text, 8).await.unwrap();
        }
        timings.push((kind, t.elapsed()));
    }
    let mut all: Vec<Duration> = timings.iter().map(|(_, d)| *d).collect();
    all.sort();
    println!(
        "{label}: {queries} searches over {entries} entries: p50 {:.1} ms, p95 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        percentile(&all, 0.50),
        percentile(&all, 0.95),
        percentile(&all, 0.99),
        percentile(&all, 1.0)
    );
    let mut kinds: Vec<&str> = timings.iter().map(|(k, _)| *k).collect();
    kinds.dedup();
    kinds.sort();
    kinds.dedup();
    for k in kinds {
        let mut d: Vec<Duration> = timings
            .iter()
            .filter(|(x, _)| *x == k)
            .map(|(_, d)| *d)
            .collect();
        d.sort();
        println!(
            "  {k:<28} p50 {:>6.1} ms  p95 {:>6.1} ms  p99 {:>6.1} ms",
            percentile(&d, 0.5),
            percentile(&d, 0.95),
            percentile(&d, 0.99)
        );
    }
}

fn text(s: &str) -> Query {
    Query {
        text: s.to_owned(),
        ..Query::default()
    }
}
