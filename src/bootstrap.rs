//! First start-up: the HISP's own domain and a first operator with a one-time password.

use anyhow::Context as _;

use crate::audit::{self, Actor, Event};
use crate::auth;
use crate::config::Config;
use crate::db::Db;
use crate::domain::{DisplayName, DomainName, Email, Role};
use crate::pki;
use crate::secrets::SecretKey;
use crate::store::{orgs, users};

/// What first start-up created. The password is for the terminal only, once.
pub struct FirstOperator {
    pub email: String,
    pub one_time_password: String,
}

impl std::fmt::Debug for FirstOperator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FirstOperator")
            .field("email", &self.email)
            .finish_non_exhaustive()
    }
}

/// Creates the HISP domain if missing, and the first operator if there are no users
/// at all. Returns the operator's one-time password when one was made.
pub async fn run(
    db: &Db,
    config: &Config,
    kek: &SecretKey,
    now: i64,
) -> anyhow::Result<Option<FirstOperator>> {
    let domain = DomainName::parse(&config.hisp_domain)
        .map_err(|e| anyhow::anyhow!("DIRECTMAIL_HISP_DOMAIN is not usable: {e}"))?;
    let email = Email::parse(&config.operator_email)
        .map_err(|e| anyhow::anyhow!("DIRECTMAIL_OPERATOR_EMAIL is not usable: {e}"))?;

    let mut tx = db.begin().await?;
    // Several instances may start at once on one PostgreSQL: the head row's lock
    // lets one of them create the first records and the others see them.
    sqlx::query("update audit_head set last_id = last_id where id = 1")
        .execute(&mut *tx)
        .await?;
    let existing: i64 = sqlx::query_scalar("select count(*) from domains where name = $1")
        .bind(domain.as_str())
        .fetch_one(&mut *tx)
        .await?;
    if existing == 0 {
        orgs::add_domain(&mut tx, None, &domain, now).await?;
        audit::append(
            &mut tx,
            now,
            &Actor::system(),
            Event::new("domain.add", domain.as_str()),
        )
        .await?;
    }
    let user_count: i64 = sqlx::query_scalar("select count(*) from users")
        .fetch_one(&mut *tx)
        .await?;
    let first = if user_count == 0 {
        let password = auth::new_one_time_password();
        let hash = tokio::task::spawn_blocking({
            let password = password.clone();
            move || auth::hash_password(&password)
        })
        .await?
        .map_err(|e| anyhow::anyhow!("cannot hash the first password: {e}"))?;
        let name = DisplayName::parse("HISP operator").map_err(anyhow::Error::msg)?;
        let user = users::create(
            &mut tx,
            users::NewUser {
                org_id: None,
                email: &email,
                display_name: &name,
                role: Role::Operator,
                password_hash: Some(hash),
                must_change_password: true,
            },
            now,
        )
        .await
        .context("cannot create the first operator")?;
        audit::append(
            &mut tx,
            now,
            &Actor::system(),
            Event::new("user.create", user.email.clone())
                .detail("first operator, one-time password"),
        )
        .await?;
        Some(FirstOperator {
            email: user.email,
            one_time_password: password,
        })
    } else {
        None
    };
    tx.commit().await?;
    if config.dev_pki {
        dev_certificate(db, kek, &domain, now).await?;
    }
    Ok(first)
}

/// The HISP domain's development certificate, when it has no certificate yet.
async fn dev_certificate(
    db: &Db,
    kek: &SecretKey,
    name: &DomainName,
    now: i64,
) -> anyhow::Result<()> {
    let Some(domain) = orgs::domain_by_name(db, name.as_str()).await? else {
        return Ok(());
    };
    if !crate::store::pki::certs_of_domain(db, domain.id)
        .await?
        .is_empty()
    {
        return Ok(());
    }
    let row = pki::issue_dev_certificate(db, kek, &domain, None, now, &Actor::system())
        .await
        .map_err(|e| anyhow::anyhow!("cannot create the development certificate: {e}"))?;
    tracing::warn!(
        domain = %domain.name,
        fingerprint = %row.fingerprint,
        "the HISP domain uses a certificate from the built-in DEVELOPMENT CA: not for production; import real ones with `directmail admin cert import`"
    );
    Ok(())
}
