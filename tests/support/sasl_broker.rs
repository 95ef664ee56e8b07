//! A second, throw-away Kafka broker with a SASL/SCRAM-SHA-512 listener
//! (`KAFKA_SASL_PORT=... deploy/local/kafka.sh start`), on free ports and a temporary data
//! directory, stopped and deleted when dropped. The shared test broker stays as it is.

use std::path::PathBuf;
use std::process::{Command, Output};

pub struct SaslBroker {
    /// The PLAINTEXT listener, for setting up topics.
    pub plaintext: String,
    /// The SASL_PLAINTEXT listener (SCRAM-SHA-512).
    pub sasl: String,
    pub user: String,
    pub password: String,
    env: Vec<(String, String)>,
    _data: tempfile::TempDir,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("deploy/local/kafka.sh")
}

impl SaslBroker {
    pub fn start(user: &str, password: &str) -> SaslBroker {
        let data = tempfile::tempdir().unwrap();
        let (port, controller, sasl) = (free_port(), free_port(), free_port());
        let env = vec![
            ("KAFKA_PORT".to_owned(), port.to_string()),
            ("KAFKA_CONTROLLER_PORT".to_owned(), controller.to_string()),
            ("KAFKA_SASL_PORT".to_owned(), sasl.to_string()),
            ("KAFKA_SASL_USER".to_owned(), user.to_owned()),
            ("KAFKA_SASL_PASSWORD".to_owned(), password.to_owned()),
            (
                "KAFKA_DATA_DIR".to_owned(),
                data.path().join("data").display().to_string(),
            ),
            ("KAFKA_HEAP_OPTS".to_owned(), "-Xmx384m".to_owned()),
        ];
        let broker = SaslBroker {
            plaintext: format!("127.0.0.1:{port}"),
            sasl: format!("127.0.0.1:{sasl}"),
            user: user.to_owned(),
            password: password.to_owned(),
            env,
            _data: data,
        };
        let output = broker.kafka_sh("start");
        assert!(
            output.status.success(),
            "the SASL broker did not start ({}):\n{}\n{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        broker
    }

    fn kafka_sh(&self, command: &str) -> Output {
        Command::new("bash")
            .arg(script())
            .arg(command)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .output()
            .expect("run deploy/local/kafka.sh")
    }
}

impl Drop for SaslBroker {
    fn drop(&mut self) {
        let _ = self.kafka_sh("stop");
    }
}
