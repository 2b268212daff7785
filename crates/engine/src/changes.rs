//! `--change`: the Dockerfile instructions `import` and `commit` apply to an image's config,
//! one per change, as dockerd takes them. Each is read and applied by the builder's own code
//! (berth-build's parser, instruction checks and dispatcher), so a change does exactly what the
//! same line does in a Dockerfile.

use std::collections::HashMap;

use berth_api::{ApiError, Kind};
use berth_store::image::{ContainerConfig, ImageConfig};

/// The instructions a change may be (dockerd's list).
const VALID: &[&str] =
    &["cmd", "entrypoint", "env", "expose", "healthcheck", "label", "onbuild", "stopsignal", "user", "volume", "workdir"];

fn bad(message: impl Into<String>) -> ApiError {
    ApiError::new(Kind::InvalidArgument, message)
}

/// Apply `changes` to `config` in order.
pub fn apply(config: &mut ContainerConfig, changes: &[String]) -> Result<(), ApiError> {
    let mut state = berth_build::dispatch::StageState::new(ImageConfig { config: config.clone(), ..Default::default() });
    let lex = berth_build::Lex::default();
    for change in changes.iter().map(|c| c.trim()).filter(|c| !c.is_empty()) {
        let word = change.split_once(char::is_whitespace).map_or(change, |(w, _)| w);
        let instruction = word.to_ascii_lowercase();
        if !VALID.contains(&instruction.as_str()) {
            return Err(bad(format!("{instruction} is not a valid change command")));
        }
        let parsed = berth_build::parse("--change", change).map_err(|e| bad(e.message))?;
        let Some(inst) = parsed.instructions.first() else { continue };
        let cmd = berth_build::command("--change", inst, parsed.directives.escape).map_err(|e| bad(e.message))?;
        state.apply(&cmd, inst, &lex, &HashMap::new(), &[]).map_err(|e| bad(e.to_string()))?;
    }
    *config = state.image.config;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn changed(changes: &[&str]) -> Result<ContainerConfig, String> {
        let mut c = ContainerConfig::default();
        apply(&mut c, &changes.iter().map(|s| s.to_string()).collect::<Vec<_>>()).map_err(|e| e.message)?;
        Ok(c)
    }

    #[test]
    fn each_instruction_import_takes() {
        let c = changed(&[
            r#"CMD ["/bin/sh", "-c", "echo hi"]"#,
            "entrypoint /entry --flag",
            r#"ENV A=1 B="two words" C=x\ y"#,
            "ENV OLD value with spaces",
            "ENV A=3",
            r#"LABEL maintainer="me" version=1"#,
            "EXPOSE 80 53/udp 8000-8001",
            r#"VOLUME ["/data", "/logs"]"#,
            "VOLUME /cache",
            "USER nobody",
            "WORKDIR /srv",
            "WORKDIR app",
            "STOPSIGNAL SIGINT",
            "ONBUILD RUN true",
        ])
        .unwrap();
        assert_eq!(c.cmd.unwrap(), ["/bin/sh", "-c", "echo hi"]);
        assert_eq!(c.entrypoint.unwrap(), ["/bin/sh", "-c", "/entry --flag"]);
        // Replaced in place, as dockerd does (`import --change "ENV A=1" … "ENV A=3"` on the peer: ["A=3","B=2"]).
        assert_eq!(c.env.unwrap(), ["A=3", "B=two words", "C=x y", "OLD=value with spaces"]);
        assert_eq!(c.labels.unwrap(), BTreeMap::from([("maintainer".into(), "me".into()), ("version".into(), "1".into())]));
        assert_eq!(c.exposed_ports.unwrap().keys().collect::<Vec<_>>(), ["53/udp", "80/tcp", "8000-8001/tcp"]);
        assert_eq!(c.volumes.unwrap().keys().collect::<Vec<_>>(), ["/cache", "/data", "/logs"]);
        assert_eq!((c.user.as_str(), c.working_dir.as_str(), c.stop_signal.as_str()), ("nobody", "/srv/app", "SIGINT"));
        assert_eq!(c.on_build.unwrap(), ["RUN true"]);
    }

    #[test]
    fn what_import_refuses_gets_dockers_words() {
        assert_eq!(changed(&["RUN echo hi"]).unwrap_err(), "run is not a valid change command");
        assert_eq!(changed(&["FROM busybox"]).unwrap_err(), "from is not a valid change command");
        assert_eq!(changed(&["NOSUCH x"]).unwrap_err(), "nosuch is not a valid change command");
        assert!(changed(&["EXPOSE http"]).unwrap_err().contains("invalid containerPort"));
        assert!(changed(&["ENV A=\"unterminated"]).unwrap_err().contains("double-quote"));
        assert!(changed(&["HEALTHCHECK RUN x"]).unwrap_err().contains("try CMD"));
        // What dockerd takes as it is (measured on the peer): a user or directory with a blank,
        // a CMD of nothing, a healthcheck.
        let c = changed(&["USER a b", "WORKDIR /my dir", "CMD", "HEALTHCHECK CMD true"]).unwrap();
        assert_eq!((c.user.as_str(), c.working_dir.as_str()), ("a b", "/my dir"));
        assert_eq!(c.cmd.unwrap(), ["/bin/sh", "-c"]);
        assert_eq!(c.healthcheck.unwrap().test, ["CMD-SHELL", "true"]);
        assert_eq!(changed(&["", "  "]).unwrap(), ContainerConfig::default(), "empty changes change nothing");
    }
}
