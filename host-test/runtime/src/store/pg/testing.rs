//! A fresh PostgreSQL database for one test, dropped when the test ends.
//!
//! The server is the one `DATABASE_URL` names, or else the local one
//! (`postgres://postgres@127.0.0.1:5432/postgres`, trust authentication). Each
//! [`TestDatabase`] creates a database with a random name and drops it in `Drop` (which also
//! runs when the test panics), so runs never see each other's data and leave nothing behind.
//!
//! There is no silent skip: without a reachable server, [`TestDatabase::create`] panics with a
//! message that says how to provide one.

use postgres::{Client, Config, NoTls};
use rand::RngCore as _;

use super::PgStore;
use crate::secrets::Keyring;

/// The variable that names the server tests use.
pub const DATABASE_URL_ENV: &str = "DATABASE_URL";
/// The server tests use when `DATABASE_URL` is unset.
pub const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// A database created for one test; dropped (with any connection still open to it) on drop.
pub struct TestDatabase {
    /// Where to connect to create and drop databases (the server's URL as given).
    admin: Config,
    name: String,
    url: String,
}

impl TestDatabase {
    /// A new empty database on the test server. Panics, saying how to provide a server, when
    /// none can be reached.
    pub fn create() -> TestDatabase {
        let base = std::env::var(DATABASE_URL_ENV)
            .ok()
            .filter(|v| !v.trim().is_empty())
            .unwrap_or_else(|| DEFAULT_DATABASE_URL.to_string());
        match TestDatabase::create_on(&base) {
            Ok(db) => db,
            Err(message) => panic!("{message}"),
        }
    }

    /// A new empty database on the server `base_url` reaches, or a message saying why not and
    /// how to provide a server.
    pub fn create_on(base_url: &str) -> Result<TestDatabase, String> {
        let shown = super::redact(base_url);
        let unreachable = |reason: String| {
            format!(
                "the PostgreSQL tests need a server and cannot use {shown}: {reason}. Set \
                 {DATABASE_URL_ENV} to a server where this user may create databases (for \
                 example {DEFAULT_DATABASE_URL}), or start PostgreSQL on 127.0.0.1:5432 with \
                 trust authentication for the user postgres (`pg_isready -h 127.0.0.1` tells \
                 whether it is up; on Debian `pg_ctlcluster 15 main start` starts it)"
            )
        };
        let admin: Config = base_url
            .parse()
            .map_err(|e: postgres::Error| unreachable(format!("not a connection URL ({e})")))?;
        let mut client = admin
            .connect(NoTls)
            .map_err(|e| unreachable(super::describe(&e)))?;
        // Lower-case letters, digits and `_` only: a valid identifier without quoting rules.
        let name = format!(
            "host_test_{}_{:016x}",
            std::process::id(),
            rand::rng().next_u64()
        );
        client
            .batch_execute(&format!("CREATE DATABASE \"{name}\""))
            .map_err(|e| {
                unreachable(format!(
                    "cannot create a database ({})",
                    super::describe(&e)
                ))
            })?;
        let url = database_url(base_url, &name);
        Ok(TestDatabase { admin, name, url })
    }

    /// The URL of the new database (what `--db` takes).
    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// A plain client of the new database, for a test that looks at the rows themselves.
    pub fn client(&self) -> Client {
        let mut config = self.admin.clone();
        config.dbname(&self.name);
        match config.connect(NoTls) {
            Ok(client) => client,
            Err(e) => panic!("cannot connect to the test database {}: {e}", self.name),
        }
    }

    /// A store on the new database (migrated), sealing with `keyring`.
    pub fn store(&self, keyring: Keyring) -> PgStore {
        match PgStore::connect(&self.url, keyring) {
            Ok(store) => store,
            Err(e) => panic!(
                "cannot open the store on the test database {}: {e}",
                self.name
            ),
        }
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        // FORCE ends the connections a store still holds. A failure here cannot fail the test
        // (panicking in drop would abort); it is reported so a leftover database is explained.
        let dropped = self.admin.connect(NoTls).and_then(|mut client| {
            client.batch_execute(&format!(
                "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
                self.name
            ))
        });
        if let Err(e) = dropped {
            eprintln!("could not drop the test database {}: {e}", self.name);
        }
    }
}

/// `base_url` with its database replaced by `name`: the path of a URL, or a `dbname=` added to
/// a `key=value` connection string (a later key wins there).
fn database_url(base_url: &str, name: &str) -> String {
    match url::Url::parse(base_url) {
        Ok(mut parsed) if matches!(parsed.scheme(), "postgres" | "postgresql") => {
            parsed.set_path(&format!("/{name}"));
            parsed.to_string()
        }
        _ => format!("{base_url} dbname={name}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unreachable_server_says_how_to_provide_one() {
        // Port 1 on loopback: nothing listens there.
        let err = TestDatabase::create_on("postgres://postgres:hunter2@127.0.0.1:1/postgres")
            .err()
            .expect("no server listens on port 1");
        assert!(err.contains(DATABASE_URL_ENV), "{err}");
        assert!(err.contains("127.0.0.1:5432"), "{err}");
        assert!(!err.contains("hunter2"), "the password leaked: {err}");
    }

    #[test]
    fn the_database_url_names_the_new_database() {
        assert_eq!(
            database_url("postgres://u@h:5432/postgres?sslmode=disable", "x"),
            "postgres://u@h:5432/x?sslmode=disable"
        );
        assert_eq!(
            database_url("host=h user=u dbname=postgres", "x"),
            "host=h user=u dbname=postgres dbname=x"
        );
    }

    #[test]
    fn each_database_is_new_and_is_dropped_at_the_end() {
        let db = TestDatabase::create();
        let other = TestDatabase::create();
        assert_ne!(db.name(), other.name());
        let name = db.name().to_string();
        let mut admin = db.admin.connect(NoTls).expect("the server is up");
        let exists = |client: &mut Client| -> bool {
            client
                .query_one(
                    "SELECT count(*) FROM pg_database WHERE datname = $1",
                    &[&name],
                )
                .and_then(|r| r.try_get::<_, i64>(0))
                .expect("pg_database is readable")
                == 1
        };
        assert!(exists(&mut admin));
        // An open connection does not keep it alive.
        let _client = db.client();
        drop(db);
        assert!(!exists(&mut admin));
    }
}
