//! `k3rs certificate check|rotate`: the expiry of every certificate under the data directory,
//! and rotation of the leaf certificates. On a server, rotation moves the leaf certificates
//! (never the CAs) aside into `expired-<time>/`; the next start issues new ones from the same
//! CAs, so nodes and kubeconfigs keep working. On a joined agent it marks the kubelet
//! certificates for renewal, which the next start does with the current client certificate.

use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::agent::join::cert_info;
use crate::server::pki::{
    AGENT_CLIENT_KUBELET, AGENT_SERVING_KUBELET, CLIENT_ADMIN, CLIENT_KUBE_APISERVER, SERVING,
};

/// The marker file that makes a joined agent renew its certificates at the next start.
pub const ROTATE_MARKER: &str = "rotate-certificates";
/// Certificates closer than this to expiry are reported as WARNING.
const WARN_SECS: i64 = 90 * 86400;

/// `k3rs certificate` flags.
#[derive(clap::Args, Debug)]
pub struct CertificateArgs {
    #[command(subcommand)]
    action: CertificateAction,
    /// Folder to hold state (default: /var/lib/k3rs or ${HOME}/.k3rs if not root)
    #[arg(
        short = 'd',
        long,
        global = true,
        env = "K3RS_DATA_DIR",
        value_name = "DIR"
    )]
    data_dir: Option<PathBuf>,
}

#[derive(clap::Subcommand, Debug)]
enum CertificateAction {
    /// Show the certificates and when they expire
    Check {
        /// Output format: table or text
        #[arg(short = 'o', long, default_value = "table", value_name = "FORMAT")]
        output: String,
    },
    /// Rotate the leaf certificates (stop k3rs first; they are reissued at the next start)
    Rotate,
}

/// Runs `k3rs certificate ...`.
pub fn run(args: CertificateArgs) -> anyhow::Result<()> {
    let data_dir = args.data_dir.unwrap_or_else(super::default_data_dir);
    match args.action {
        CertificateAction::Check { output } => {
            let certs = list(&data_dir);
            if certs.is_empty() {
                anyhow::bail!(
                    "no certificates under {}: is --data-dir right?",
                    data_dir.display()
                );
            }
            let now = jiff::Timestamp::now().as_second();
            match output.as_str() {
                "table" => print!("{}", table(&certs, now)),
                "text" => {
                    for c in &certs {
                        println!(
                            "{}: {} expires {} ({})",
                            c.0.display(),
                            c.1,
                            date(c.2),
                            status(c.2, now)
                        );
                    }
                }
                o => anyhow::bail!("unknown output format {o:?}: use table or text"),
            }
            Ok(())
        }
        CertificateAction::Rotate => rotate(&data_dir),
    }
}

/// (file, subject CN, notAfter) of every certificate under the server's tls and agent dirs.
fn list(data_dir: &Path) -> Vec<(PathBuf, String, i64)> {
    let mut out = Vec::new();
    for dir in [data_dir.join("server").join("tls"), data_dir.join("agent")] {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        let mut files: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "crt"))
            .collect();
        files.sort();
        for f in files {
            if let Some((cn, not_after)) = cert_info(&f) {
                out.push((f, cn, not_after));
            }
        }
    }
    out
}

fn date(ts: i64) -> String {
    jiff::Timestamp::from_second(ts)
        .map(|t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_else(|_| "?".into())
}

fn status(not_after: i64, now: i64) -> &'static str {
    if not_after <= now {
        "EXPIRED"
    } else if not_after - now < WARN_SECS {
        "WARNING"
    } else {
        "OK"
    }
}

fn table(certs: &[(PathBuf, String, i64)], now: i64) -> String {
    let mut rows = vec![[
        "FILENAME".to_string(),
        "SUBJECT".into(),
        "EXPIRES".into(),
        "RESIDUAL TIME".into(),
        "STATUS".into(),
    ]];
    for (path, cn, not_after) in certs {
        let left = not_after - now;
        let residual = if left <= 0 {
            "0d".to_string()
        } else {
            format!("{}d", left / 86400)
        };
        rows.push([
            path.display().to_string(),
            cn.clone(),
            date(*not_after),
            residual,
            status(*not_after, now).to_string(),
        ]);
    }
    let widths: Vec<usize> = (0..5)
        .map(|i| rows.iter().map(|r| r[i].len()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for r in rows {
        let cells: Vec<String> = r
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = widths[i]))
            .collect();
        out.push_str(cells.join("   ").trim_end());
        out.push('\n');
    }
    out
}

fn rotate(data_dir: &Path) -> anyhow::Result<()> {
    let tls = data_dir.join("server").join("tls");
    let agent = data_dir.join("agent");
    let stamp = jiff::Timestamp::now().as_second();
    if tls.join("server-ca.crt").exists() {
        let mut moved = 0;
        for (dir, names) in [
            (&tls, &[SERVING, CLIENT_ADMIN, CLIENT_KUBE_APISERVER][..]),
            (&agent, &[AGENT_CLIENT_KUBELET, AGENT_SERVING_KUBELET][..]),
        ] {
            let backup = dir.join(format!("expired-{stamp}"));
            for name in names {
                for ext in ["crt", "key"] {
                    let f = dir.join(format!("{name}.{ext}"));
                    if !f.exists() {
                        continue;
                    }
                    std::fs::create_dir_all(&backup)
                        .with_context(|| format!("creating {}", backup.display()))?;
                    // Keys are kept with the certificates so the backup can be restored.
                    std::fs::rename(&f, backup.join(format!("{name}.{ext}")))
                        .with_context(|| format!("moving {} aside", f.display()))?;
                    moved += 1;
                }
            }
        }
        println!(
            "Moved {moved} leaf certificate files to expired-{stamp}/ under {} and {}; \
             start k3rs to issue new certificates from the same CAs",
            tls.display(),
            agent.display()
        );
        return Ok(());
    }
    if agent.join(format!("{AGENT_CLIENT_KUBELET}.crt")).exists() {
        crate::server::pki::write_private(&agent.join(ROTATE_MARKER), b"", 0o600)?;
        println!(
            "The kubelet certificates in {} will be renewed when the agent starts next",
            agent.display()
        );
        return Ok(());
    }
    anyhow::bail!(
        "no certificates under {}: is --data-dir right?",
        data_dir.display()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_and_table() {
        assert_eq!(status(100, 200), "EXPIRED");
        assert_eq!(status(200 + 86400, 200), "WARNING");
        assert_eq!(status(200 + 100 * 86400, 200), "OK");
        let t = table(
            &[("/x/a.crt".into(), "kube-apiserver".into(), 86400 * 400)],
            0,
        );
        assert!(t.starts_with("FILENAME"), "{t}");
        assert!(t.contains("400d") && t.contains("OK"), "{t}");
    }
}
