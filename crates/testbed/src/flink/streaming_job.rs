//! The streaming job of the article's setup, small: numbers 1..N at a fixed rate, checkpointed
//! every second, written by an exactly-once FileSink. Compiled here with the machine's `javac`
//! against the distribution's jars, run in application mode, and judged afterwards: the committed
//! output must hold every number exactly once, across any JobManager failover.

use super::Flink;
use std::collections::BTreeSet;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The job's main class (in the default package of its jar).
pub const CLASS: &str = "CountToN";

/// Source of the job. `fromSequence` is a checkpointed source (its reader's position is in
/// each checkpoint), the pacing map keeps it streaming for long enough to kill the JobManager
/// mid-stream, and the FileSink commits part files only on checkpoints
/// (`OnCheckpointRollingPolicy`): what a killed attempt wrote after the last checkpoint stays
/// in a hidden in-progress file and is not output.
const SOURCE: &str = r#"import org.apache.flink.api.common.functions.MapFunction;
import org.apache.flink.api.common.serialization.SimpleStringEncoder;
import org.apache.flink.connector.file.sink.FileSink;
import org.apache.flink.core.fs.Path;
import org.apache.flink.streaming.api.environment.StreamExecutionEnvironment;
import org.apache.flink.streaming.api.functions.sink.filesystem.bucketassigners.BasePathBucketAssigner;
import org.apache.flink.streaming.api.functions.sink.filesystem.rollingpolicies.OnCheckpointRollingPolicy;

/** Writes 1..N, RATE a second, exactly once into OUTPUT. Arguments: N RATE OUTPUT. */
public class CountToN {
    public static void main(String[] args) throws Exception {
        long n = Long.parseLong(args[0]);
        long rate = Long.parseLong(args[1]);
        String output = args[2];
        StreamExecutionEnvironment env = StreamExecutionEnvironment.getExecutionEnvironment();
        env.setParallelism(1);
        env.enableCheckpointing(1000);
        FileSink<String> sink = FileSink
            .forRowFormat(new Path(output), new SimpleStringEncoder<String>("UTF-8"))
            .withBucketAssigner(new BasePathBucketAssigner<>())
            .withRollingPolicy(OnCheckpointRollingPolicy.build())
            .build();
        env.fromSequence(1, n).map(new Pace(rate)).sinkTo(sink);
        env.execute("count to " + n);
    }

    /** Holds the stream to RATE records a second, in steps of 20 records. */
    public static class Pace implements MapFunction<Long, String> {
        private final long rate;
        private long seen;

        Pace(long rate) {
            this.rate = rate;
        }

        @Override
        public String map(Long value) throws Exception {
            if (++seen % 20 == 0) {
                Thread.sleep(20_000L / rate);
            }
            return value.toString();
        }
    }
}
"#;

/// The job, compiled, with what it is to write.
#[derive(Debug, Clone)]
pub struct StreamingJob {
    pub jar: PathBuf,
    /// Numbers 1..=count.
    pub count: u64,
    /// Records a second.
    pub rate: u64,
    /// The FileSink's base dir (a local dir; every part file directly in it).
    pub output: PathBuf,
}

impl StreamingJob {
    /// Compiles the job into `dir` with the machine's `javac` and `jar` against the
    /// distribution's `lib/*`.
    pub fn compile(
        flink: &Flink,
        dir: &Path,
        count: u64,
        rate: u64,
        output: &Path,
    ) -> io::Result<StreamingJob> {
        let classes = dir.join("classes");
        fs::create_dir_all(&classes)?;
        fs::create_dir_all(output)?;
        let source = dir.join(format!("{CLASS}.java"));
        fs::write(&source, SOURCE)?;
        let mut javac = Command::new("javac");
        javac
            .arg("-cp")
            .arg(flink.home().join("lib").join("*"))
            .arg("-d")
            .arg(&classes)
            .arg(&source);
        run(javac, "javac")?;
        let jar = dir.join("count-to-n.jar");
        let mut pack = Command::new("jar");
        pack.arg("--create")
            .arg("--file")
            .arg(&jar)
            .arg("-C")
            .arg(&classes)
            .arg(".");
        run(pack, "jar")?;
        Ok(StreamingJob {
            jar,
            count,
            rate,
            output: output.to_path_buf(),
        })
    }

    /// The application-mode JobManager's view of this job.
    pub fn application(&self) -> super::Application {
        super::Application {
            jar: self.jar.clone(),
            class: CLASS.to_owned(),
            args: vec![
                self.count.to_string(),
                self.rate.to_string(),
                format!("file://{}", self.output.display()),
            ],
        }
    }

    /// Reads every committed part file (hidden in-progress files are not output) and judges
    /// it against 1..=count.
    pub fn judge_output(&self) -> io::Result<ExactlyOnce> {
        let mut numbers = Vec::new();
        for entry in fs::read_dir(&self.output)? {
            let entry = entry?;
            let name = entry.file_name();
            if name.to_string_lossy().starts_with('.') || !entry.file_type()?.is_file() {
                continue;
            }
            let text = fs::read_to_string(entry.path())?;
            numbers.extend(text.lines().map(str::to_owned));
        }
        Ok(ExactlyOnce::judge(
            self.count,
            numbers.iter().map(String::as_str),
        ))
    }
}

/// How committed output compares with 1..=expected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExactlyOnce {
    pub expected: u64,
    /// Lines read.
    pub records: u64,
    /// Numbers of 1..=expected that never appear.
    pub missing: u64,
    /// Lines beyond the first of a number.
    pub duplicates: u64,
    /// Lines that are no number of 1..=expected.
    pub foreign: u64,
    /// The smallest missing number, to say where a loss begins.
    pub first_missing: Option<u64>,
}

impl ExactlyOnce {
    pub fn judge<'a>(expected: u64, lines: impl Iterator<Item = &'a str>) -> ExactlyOnce {
        let mut seen = BTreeSet::new();
        let (mut records, mut duplicates, mut foreign) = (0, 0, 0);
        for line in lines {
            records += 1;
            match line.trim().parse::<u64>() {
                Ok(number) if (1..=expected).contains(&number) => {
                    if !seen.insert(number) {
                        duplicates += 1;
                    }
                }
                _ => foreign += 1,
            }
        }
        let first_missing = (1..=expected).find(|number| !seen.contains(number));
        ExactlyOnce {
            expected,
            records,
            missing: expected - seen.len() as u64,
            duplicates,
            foreign,
            first_missing,
        }
    }

    pub fn holds(&self) -> bool {
        self.missing == 0 && self.duplicates == 0 && self.foreign == 0
    }
}

impl std::fmt::Display for ExactlyOnce {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.holds() {
            return write!(f, "exactly once: 1..{} each once", self.expected);
        }
        write!(
            f,
            "NOT exactly once: {} records for 1..{}, {} missing (first {:?}), {} duplicates, \
             {} foreign lines",
            self.records,
            self.expected,
            self.missing,
            self.first_missing,
            self.duplicates,
            self.foreign
        )
    }
}

/// The checkpoint a (re)started JobManager restored its job from, from the log line of Flink's
/// CheckpointCoordinator: "Restoring job <id> from Checkpoint <n> @ <ts> for <id> located at …".
/// The last such line counts; returned with the number.
pub fn restored_checkpoint(log: &str) -> Option<(u64, &str)> {
    log.lines().rev().find_map(|line| {
        let rest = line.split("Restoring job ").nth(1)?;
        let after = rest.split(" from Checkpoint ").nth(1)?;
        let digits: String = after.chars().take_while(char::is_ascii_digit).collect();
        Some((digits.parse().ok()?, line))
    })
}

fn run(mut command: Command, name: &str) -> io::Result<()> {
    let output = command.output()?;
    if output.status.success() {
        return Ok(());
    }
    Err(io::Error::other(format!(
        "{name} failed ({}):\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_number_once_holds() {
        let lines = ["3", "1", "2"];
        let verdict = ExactlyOnce::judge(3, lines.into_iter());
        assert!(verdict.holds(), "{verdict}");
    }

    #[test]
    fn a_replayed_number_is_a_duplicate() {
        let verdict = ExactlyOnce::judge(3, ["1", "2", "2", "3"].into_iter());
        assert_eq!((verdict.duplicates, verdict.missing), (1, 0));
        assert!(!verdict.holds());
    }

    #[test]
    fn a_lost_number_is_missing_and_named() {
        let verdict = ExactlyOnce::judge(4, ["1", "2", "4"].into_iter());
        assert_eq!((verdict.missing, verdict.first_missing), (1, Some(3)));
        assert!(!verdict.holds());
    }

    #[test]
    fn garbage_and_out_of_range_lines_are_foreign() {
        let verdict = ExactlyOnce::judge(2, ["1", "2", "x", "0", "3"].into_iter());
        assert_eq!(verdict.foreign, 3);
        assert!(!verdict.holds());
    }
}
