//! What the benchmarks share: sizes from the environment and a fresh database.

use directmail::config::DatabaseUrl;

/// A size from the environment, or `default`.
pub fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The PostgreSQL server's URL from `DIRECTMAIL_BENCH_POSTGRES_URL` (or the test
/// suite's `DIRECTMAIL_TEST_POSTGRES_URL`), if one is set.
pub fn postgres_admin() -> Option<String> {
    std::env::var("DIRECTMAIL_BENCH_POSTGRES_URL")
        .or_else(|_| std::env::var("DIRECTMAIL_TEST_POSTGRES_URL"))
        .ok()
        .filter(|s| !s.is_empty())
}

/// A fresh database: on the PostgreSQL named by `DIRECTMAIL_BENCH_POSTGRES_URL` (or
/// the test suite's `DIRECTMAIL_TEST_POSTGRES_URL`) a new database named after
/// `prefix` and this process, else a SQLite file in `dir`; with the backend's name.
pub async fn database(dir: &std::path::Path, prefix: &str) -> (DatabaseUrl, &'static str) {
    match postgres_admin() {
        Some(admin) => {
            use sqlx::Connection as _;
            let name = format!("{prefix}_{}", std::process::id());
            let mut conn = sqlx::PgConnection::connect(&admin).await.unwrap();
            sqlx::query(&format!("create database {name}"))
                .execute(&mut conn)
                .await
                .unwrap();
            let base = admin.rsplit_once('/').map(|(b, _)| b).unwrap().to_owned();
            (DatabaseUrl(format!("{base}/{name}")), "PostgreSQL")
        }
        None => (
            DatabaseUrl(format!("sqlite://{}", dir.join("bench.db").display())),
            "SQLite",
        ),
    }
}

/// The database `BENCH_DATABASE` names, created if missing: on the PostgreSQL server
/// of [`database`] when one is set, else a SQLite file.
#[allow(dead_code)] // not every benchmark keeps its database
pub async fn kept_database(name: &str) -> (directmail::config::DatabaseUrl, &'static str) {
    use directmail::config::DatabaseUrl;
    let Some(admin) = postgres_admin() else {
        return (DatabaseUrl(format!("sqlite://{name}")), "SQLite");
    };
    use sqlx::Connection as _;
    assert!(
        name.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
        "BENCH_DATABASE on PostgreSQL: lowercase letters, digits and _ only"
    );
    let mut conn = sqlx::PgConnection::connect(&admin).await.unwrap();
    let exists: Option<i32> = sqlx::query_scalar("select 1 from pg_database where datname = $1")
        .bind(name)
        .fetch_optional(&mut conn)
        .await
        .unwrap();
    if exists.is_none() {
        sqlx::query(&format!("create database {name}"))
            .execute(&mut conn)
            .await
            .unwrap();
    }
    let base = admin.rsplit_once('/').map(|(b, _)| b).unwrap();
    (DatabaseUrl(format!("{base}/{name}")), "PostgreSQL")
}
