//! The stages of a Dockerfile and which of them a build needs: ARGs before the first FROM are
//! the global scope (`--build-arg` over their defaults) that FROM lines expand in; a stage's
//! base is an image, `scratch` or an earlier stage by name or index; `COPY --from` makes a stage
//! depend on another (or on an image); `--target` picks the stage to build (the last one by
//! default), and only the stages it reaches are built, in an order where each comes after what
//! it needs (stages that do not depend on each other can run at once).

use std::collections::HashMap;

use crate::instructions::{Command, command};
use crate::parser::{Dockerfile, Instruction, ParseError};
use crate::shell::Lex;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Base {
    Scratch,
    Image(String),
    Stage(usize),
}

#[derive(Debug, Clone)]
pub struct Stage {
    pub index: usize,
    pub name: Option<String>,
    pub base: Base,
    pub platform: Option<String>,
    /// The stage's instructions after its FROM, typed.
    pub steps: Vec<(Instruction, Command)>,
    /// Earlier stages it needs (its base, `COPY --from`), and images `COPY --from` names.
    pub needs: Vec<usize>,
    pub copies_from_images: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct Plan {
    pub stages: Vec<Stage>,
    pub target: usize,
    /// Indexes of the stages to build, each after those it needs.
    pub order: Vec<usize>,
    /// Global ARGs with their values (build arguments over defaults).
    pub global: Vec<(String, Option<String>)>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error(transparent)]
    Parse(#[from] ParseError),
    #[error("{0}")]
    Invalid(String),
}

fn located(file: &str, i: &Instruction, message: String) -> PlanError {
    PlanError::Parse(ParseError { file: file.to_string(), pos: i.pos, message })
}

/// Plan the build of `df` (named `file`) with `build_args` for `target`.
pub fn plan(file: &str, df: &Dockerfile, build_args: &HashMap<String, String>, target: Option<&str>) -> Result<Plan, PlanError> {
    let lex = Lex::new(df.directives.escape);
    let escape = df.directives.escape;
    let mut global: Vec<(String, Option<String>)> = Vec::new();
    let mut stages: Vec<Stage> = Vec::new();
    for i in &df.instructions {
        let cmd = command(file, i, escape)?;
        match cmd {
            Command::From { image, alias, platform } => {
                let scope: HashMap<String, String> = global.iter().filter_map(|(k, v)| v.clone().map(|v| (k.clone(), v))).collect();
                let image = lex.word(&image, &scope).map_err(|e| located(file, i, e.to_string()))?;
                if image.is_empty() {
                    return Err(located(file, i, "base name (${...}) should not be blank".into()));
                }
                let index = stages.len();
                let by_name = stages.iter().find(|s| s.name.as_deref().is_some_and(|n| n.eq_ignore_ascii_case(&image))).map(|s| s.index);
                let base = match by_name {
                    Some(n) => Base::Stage(n),
                    None if image.eq_ignore_ascii_case("scratch") => Base::Scratch,
                    None => Base::Image(image),
                };
                if let Some(a) = &alias
                    && stages.iter().any(|s| s.name.as_deref().is_some_and(|n| n.eq_ignore_ascii_case(a)))
                {
                    return Err(located(file, i, format!("duplicate stage name {a:?}")));
                }
                let needs = match base {
                    Base::Stage(n) => vec![n],
                    _ => Vec::new(),
                };
                let name = alias.map(|a| a.to_ascii_lowercase());
                stages.push(Stage { index, name, base, platform, steps: Vec::new(), needs, copies_from_images: Vec::new() });
            }
            Command::Arg(args) if stages.is_empty() => {
                for (name, default) in args {
                    let value = build_args.get(&name).cloned().or(default);
                    global.push((name, value));
                }
            }
            _ if stages.is_empty() => {
                return Err(located(file, i, format!("no build stage in current context ({} before FROM)", i.keyword)));
            }
            cmd => {
                let Some(stage) = stages.last_mut() else { continue };
                if let Command::Copy(c) = &cmd
                    && let Some(from) = &c.from
                {
                    let from_l = from.to_ascii_lowercase();
                    let earlier = match from_l.parse::<usize>() {
                        Ok(n) if n < stage.index => Some(n),
                        Ok(n) => {
                            return Err(located(file, i, format!("invalid from flag value {n}: refers to current or future build stage")));
                        }
                        Err(_) => stages_named(stages_before(&stages), &from_l),
                    };
                    let stage = stages.last_mut().expect("a stage is open");
                    match earlier {
                        Some(n) => {
                            if !stage.needs.contains(&n) {
                                stage.needs.push(n);
                            }
                        }
                        None => stage.copies_from_images.push(from.clone()),
                    }
                    stage.steps.push((i.clone(), cmd));
                    continue;
                }
                stage.steps.push((i.clone(), cmd));
            }
        }
    }
    if stages.is_empty() {
        return Err(PlanError::Invalid("the Dockerfile has no FROM: no build stage".into()));
    }
    let target = match target.filter(|t| !t.is_empty()) {
        Some(t) => stages
            .iter()
            .find(|s| s.name.as_deref().is_some_and(|n| n.eq_ignore_ascii_case(t)))
            .map(|s| s.index)
            .ok_or_else(|| PlanError::Invalid(format!("failed to reach build target {t} in Dockerfile")))?,
        None => stages.len() - 1,
    };
    let mut order = Vec::new();
    visit(&stages, target, &mut order);
    Ok(Plan { stages, target, order, global })
}

/// The stages before the one being read (the last).
fn stages_before(stages: &[Stage]) -> &[Stage] {
    &stages[..stages.len().saturating_sub(1)]
}

fn stages_named(stages: &[Stage], name: &str) -> Option<usize> {
    stages.iter().find(|s| s.name.as_deref() == Some(name)).map(|s| s.index)
}

/// Depth first: what `n` needs, then `n`.
fn visit(stages: &[Stage], n: usize, order: &mut Vec<usize>) {
    if order.contains(&n) {
        return;
    }
    for d in &stages[n].needs {
        visit(stages, *d, order);
    }
    order.push(n);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan_of(src: &str, args: &[(&str, &str)], target: Option<&str>) -> Result<Plan, String> {
        let df = crate::parser::parse("Dockerfile", src).map_err(|e| e.to_string())?;
        let args: HashMap<String, String> = args.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        plan("Dockerfile", &df, &args, target).map_err(|e| e.to_string())
    }

    const MULTI: &str = "ARG BASE=busybox\nARG TAG\n\
        FROM ${BASE}:${TAG:-latest} AS deps\nRUN make deps\n\
        FROM scratch AS unused\nCOPY x /x\n\
        FROM deps AS build\nRUN make\n\
        FROM alpine AS tools\nRUN apk add tool\n\
        FROM busybox\nCOPY --from=build /out /out\nCOPY --from=tools /tool /tool\nCOPY --from=nginx:1 /etc/nginx /n\n";

    #[test]
    fn only_the_stages_the_target_reaches_in_dependency_order() {
        let p = plan_of(MULTI, &[("TAG", "1.36")], None).unwrap();
        assert_eq!(p.stages[0].base, Base::Image("busybox:1.36".into()));
        assert_eq!(p.stages[1].base, Base::Scratch);
        assert_eq!(p.stages[2].base, Base::Stage(0));
        assert_eq!(p.target, 4);
        assert_eq!(p.order, [0, 2, 3, 4], "the unused stage is not built");
        assert_eq!(p.stages[4].copies_from_images, ["nginx:1"]);
        assert_eq!(p.global, vec![("BASE".into(), Some("busybox".into())), ("TAG".into(), Some("1.36".into()))]);
        let p = plan_of(MULTI, &[("BASE", "alpine")], Some("BUILD")).unwrap();
        assert_eq!(p.stages[0].base, Base::Image("alpine:latest".into()));
        assert_eq!((p.target, p.order.clone()), (2, vec![0, 2]));
        let p = plan_of("FROM a\nFROM b\nCOPY --from=0 /x /x\n", &[], None).unwrap();
        assert_eq!(p.order, [0, 1]);
    }

    #[test]
    fn planning_errors() {
        let table: &[(&str, Option<&str>, &str)] = &[
            ("RUN x\nFROM a", None, "Dockerfile:1:1: no build stage in current context (RUN before FROM)"),
            ("FROM a AS x\nFROM b AS X", None, "Dockerfile:2:1: duplicate stage name \"X\""),
            ("FROM a\nCOPY --from=0 /x /x", None, "Dockerfile:2:1: invalid from flag value 0: refers to current or future build stage"),
            ("FROM a AS one", Some("two"), "failed to reach build target two in Dockerfile"),
            ("ARG X\n", None, "the Dockerfile has no FROM: no build stage"),
            ("ARG X\nFROM ${X}", None, "Dockerfile:2:1: base name (${...}) should not be blank"),
            ("FROM ${X:?required}", None, "Dockerfile:1:1: X: required"),
        ];
        for (src, target, want) in table {
            assert_eq!(plan_of(src, &[], *target).err().as_deref(), Some(*want), "{src}");
        }
    }
}
