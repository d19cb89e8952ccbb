//! The contract suite on PostgreSQL (the local server in CI): each store gets
//! a schema of its own in the database named by `BRAID_TEST_POSTGRES`
//! (e.g. `postgres://root@127.0.0.1:5432/test`). Without that variable the
//! PostgreSQL half is skipped, and says so.

use std::io::Write as _;

use braid_store::{PgStore, Store, contract};

/// The server to test against, or `None` (the test says it skipped).
pub fn server() -> Option<String> {
    match std::env::var("BRAID_TEST_POSTGRES") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            // Straight to the terminal: the test harness captures print!.
            let _ = writeln!(
                std::io::stderr(),
                "\nSKIPPED: the PostgreSQL contract suite (set BRAID_TEST_POSTGRES=postgres://... to run it)"
            );
            None
        }
    }
}

/// Runs SQL on the server outside any store (creating and dropping schemas).
fn admin(url: &str, sql: &str) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
            .await
            .unwrap_or_else(|e| panic!("BRAID_TEST_POSTGRES={url}: {e}"));
        tokio::spawn(conn);
        client.batch_execute(sql).await.unwrap();
    });
}

/// A fresh schema and the URL of a store living in it.
pub struct Schema {
    server: String,
    pub name: String,
    pub url: String,
}

impl Schema {
    pub fn new(server: &str) -> Schema {
        let name = format!(
            "braid_t{}_{}",
            std::process::id(),
            braid_core::TaskId::random(8).as_str()[3..].to_owned()
        );
        admin(server, &format!("CREATE SCHEMA {name}"));
        let sep = if server.contains('?') { '&' } else { '?' };
        let url = format!("{server}{sep}options=-c%20search_path%3D{name}");
        Schema {
            server: server.to_owned(),
            name,
            url,
        }
    }
}

impl Drop for Schema {
    fn drop(&mut self) {
        admin(&self.server, &format!("DROP SCHEMA {} CASCADE", self.name));
    }
}

#[test]
fn contract_suite_on_postgres() {
    let Some(server) = server() else { return };
    let mut schemas = Vec::new();
    contract::run_all(&mut || {
        let s = Schema::new(&server);
        let store = PgStore::open(&s.url).unwrap();
        schemas.push(s);
        Box::new(store) as Box<dyn Store>
    });
}

#[test]
fn a_bad_address_is_named_without_its_password() {
    let Some(_) = server() else { return };
    let Err(e) = PgStore::open("postgres://u:secret@127.0.0.1:1/nope") else {
        panic!("no server listens on port 1");
    };
    let e = e.to_string();
    assert!(e.contains("127.0.0.1") && !e.contains("secret"), "{e}");
}
