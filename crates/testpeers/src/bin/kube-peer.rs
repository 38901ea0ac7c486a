//! Starts the test control plane by hand, for debugging: prints the admin kubeconfig's path and
//! runs until stdin closes or Ctrl-C (everything is killed and removed then).
//!
//! `JOBTIDE_KUBE_BIN="$(scripts/install-kube-peers)" cargo run -p jobtide-testpeers --bin kube-peer`
//!
//! With `JOBTIDE_KUEUE` set (`scripts/install-kueue`), Kueue's manager runs on it too, as the
//! Kueue tests run it (a failure to start is printed; the control plane keeps running).

use std::io::BufRead as _;
use std::process::ExitCode;

use jobtide_testpeers::{ControlPlane, KubeInstall, Kueue};

fn main() -> ExitCode {
    let Some(install) = KubeInstall::from_env() else {
        return ExitCode::FAILURE;
    };
    let plane = match ControlPlane::start(install) {
        Ok(plane) => plane,
        Err(error) => {
            eprintln!("kube-peer: {error}");
            return ExitCode::FAILURE;
        }
    };
    let times = plane.start_times;
    println!("kubernetes {} at {}", plane.version, plane.server);
    println!(
        "started in {:.1} s (certificates {:.1} s, etcd {:.1} s, kube-apiserver {:.1} s, \
         kube-scheduler {:.1} s, kube-controller-manager {:.1} s)",
        times.total.as_secs_f64(),
        times.certificates.as_secs_f64(),
        times.etcd.as_secs_f64(),
        times.apiserver.as_secs_f64(),
        times.scheduler.as_secs_f64(),
        times.controller_manager.as_secs_f64(),
    );
    println!("logs in {}", plane.dir.display());
    println!("export KUBECONFIG={}", plane.admin_kubeconfig.display());
    let kueue = std::env::var_os("JOBTIDE_KUEUE")
        .filter(|binary| !binary.is_empty())
        .map(
            |binary| match Kueue::start(&plane, std::path::Path::new(&binary)) {
                Ok(kueue) => {
                    println!(
                        "kueue {} ready in {:.1} s, its log: {}",
                        kueue.version,
                        kueue.start_time.as_secs_f64(),
                        kueue.log.display()
                    );
                    Some(kueue)
                }
                Err(error) => {
                    eprintln!("kube-peer: starting Kueue failed: {error}");
                    None
                }
            },
        );
    println!("(press Enter or Ctrl-C to stop)");
    // Ctrl-C kills this process: the supervisors kill the control plane with it.
    let _ = std::io::stdin().lock().lines().next();
    drop(kueue);
    drop(plane);
    ExitCode::SUCCESS
}
