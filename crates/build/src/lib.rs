//! berth-build: Dockerfile builds. Today the parser (`parser`: directives, continuations,
//! heredocs, exec and shell forms, flags), each instruction's arguments checked and typed
//! (`instructions`), the expansion of variables in arguments (`shell`), `.dockerignore`
//! (`ignore`), the stage planner (`plan`), the context's sources and their digest
//! (`context`), what metadata instructions do to a stage's config (`dispatch`), and the build
//! loop with its cache keys over an `Executor` and a `Cache` (`builder`), all by BuildKit's and
//! Docker's rules. The engine's executor and cache, and `/build`, come next (issue 19). It
//! depends on the store, never on the engine.

pub mod builder;
pub mod context;
pub mod dispatch;
pub mod ignore;
pub mod instructions;
pub mod parser;
pub mod plan;
pub mod shell;

pub use instructions::{Command, command};
pub use parser::{Dockerfile, Form, Heredoc, Instruction, ParseError, parse};
pub use plan::{Base, Plan, PlanError, Stage, plan};
pub use shell::{ExpandError, Lex, Vars};
