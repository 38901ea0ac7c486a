//! `jobtide kafka produce | consume | topic create`: the small Kafka client demos, tests and Jobs
//! use (the seed's `kafka-console-consumer --max-messages 1 --property print.key=true`). Names
//! (brokers, topic, group, key separator) may not be empty: clap refuses them naming the flag.

use std::io::BufRead;
use std::process::ExitCode;
use std::time::Duration;

use clap::builder::NonEmptyStringValueParser;
use clap::{Args, Subcommand};
use jobtide_kafka::tools::{self, StartFrom};

/// `jobtide kafka …`
#[derive(Debug, Subcommand)]
pub enum KafkaCommand {
    /// Produce messages: each `--value`, or else one per stdin line (`KEY<sep>VALUE` with
    /// `--key-separator`).
    Produce(ProduceArgs),
    /// Consume up to `--max-messages` in a consumer group, committing each, and print them
    /// (`key<TAB>value` with `--print-key`), then `Processed a total of N messages` on stderr.
    Consume(ConsumeArgs),
    /// Topic administration.
    #[command(subcommand)]
    Topic(TopicCommand),
    /// librdkafka's Kerberos ticket helper (`sasl.kerberos.kinit.cmd`, see
    /// `jobtide_kafka::kerberos`): runs `kinit` for the principal a private spec file names,
    /// without a shell. Not for direct use.
    #[command(hide = true)]
    Kinit(KinitArgs),
}

#[derive(Debug, Args)]
pub struct KinitArgs {
    /// The spec file the client configuration wrote.
    spec: std::path::PathBuf,
    /// The kinit program.
    #[arg(long, default_value = "kinit", env = "JOBTIDE_KINIT")]
    kinit: std::ffi::OsString,
}

/// `jobtide kafka topic …`
#[derive(Debug, Subcommand)]
pub enum TopicCommand {
    /// Create a topic (Admin API; not available on librdkafka's mock cluster).
    Create(CreateTopicArgs),
}

#[derive(Debug, Args)]
pub struct Connection {
    /// Brokers, `host:port[,host:port…]`.
    #[arg(long, value_name = "HOST:PORT[,…]", env = "JOBTIDE_BOOTSTRAP_SERVERS", value_parser = NonEmptyStringValueParser::new())]
    bootstrap_servers: String,
    /// How long to wait for the cluster (at most a day).
    #[arg(
        long,
        value_name = "SECONDS",
        default_value_t = 30,
        value_parser = crate::cli::timeout_seconds(),
        env = "JOBTIDE_KAFKA_TIMEOUT"
    )]
    timeout: u64,
}

#[derive(Debug, Args)]
pub struct ProduceArgs {
    #[command(flatten)]
    connection: Connection,
    /// The topic.
    #[arg(long, env = "JOBTIDE_TOPIC", value_parser = NonEmptyStringValueParser::new())]
    topic: String,
    /// A message value (repeatable); without any, stdin lines are produced.
    #[arg(long = "value", value_name = "VALUE")]
    values: Vec<String>,
    /// The key of every `--value` message.
    #[arg(long)]
    key: Option<String>,
    /// For stdin lines: split `KEY<sep>VALUE` at the first occurrence of this separator.
    #[arg(long, value_name = "SEP", value_parser = NonEmptyStringValueParser::new())]
    key_separator: Option<String>,
    /// Produce this many messages instead: the `--value`s in turn, or `message-<i>`; with
    /// `--key`, every message gets it, else the key is `<i>`.
    #[arg(long, value_name = "N", conflicts_with = "key_separator")]
    count: Option<usize>,
}

#[derive(Debug, Args)]
pub struct ConsumeArgs {
    #[command(flatten)]
    connection: Connection,
    /// The topic.
    #[arg(long, env = "JOBTIDE_TOPIC", value_parser = NonEmptyStringValueParser::new())]
    topic: String,
    /// The consumer group (offsets are committed to it).
    #[arg(long, env = "JOBTIDE_GROUP", value_parser = NonEmptyStringValueParser::new())]
    group: String,
    /// Stop after this many messages.
    #[arg(long, default_value_t = 1, env = "JOBTIDE_MAX_MESSAGES")]
    max_messages: usize,
    /// With no committed offset, start at the beginning (default: the end, like
    /// kafka-console-consumer).
    #[arg(long)]
    from_beginning: bool,
    /// Print `key<TAB>value` (kafka-console-consumer's `print.key=true`).
    #[arg(long)]
    print_key: bool,
}

#[derive(Debug, Args)]
pub struct CreateTopicArgs {
    #[command(flatten)]
    connection: Connection,
    /// The topic's name.
    #[arg(value_parser = NonEmptyStringValueParser::new())]
    name: String,
    /// Partition count.
    #[arg(long, default_value_t = 1)]
    partitions: i32,
}

pub fn run(command: KafkaCommand) -> ExitCode {
    let runtime = match crate::cli::runtime() {
        Ok(runtime) => runtime,
        Err(code) => return code,
    };
    match runtime.block_on(dispatch(command)) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn dispatch(command: KafkaCommand) -> anyhow::Result<ExitCode> {
    match command {
        KafkaCommand::Produce(args) => produce(args).await,
        KafkaCommand::Consume(args) => consume(args).await,
        KafkaCommand::Kinit(KinitArgs { spec, kinit }) => {
            // librdkafka waits for this command; a short blocking child is fine here.
            let status = jobtide_kafka::kerberos::run_kinit(&spec, &kinit)?;
            Ok(if status.success() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        KafkaCommand::Topic(TopicCommand::Create(args)) => {
            let CreateTopicArgs {
                connection,
                name,
                partitions,
            } = args;
            tools::create_topic(
                &connection.bootstrap_servers,
                &name,
                partitions,
                Duration::from_secs(connection.timeout),
            )
            .await?;
            eprintln!("Created topic {name} with {partitions} partition(s).");
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn produce(args: ProduceArgs) -> anyhow::Result<ExitCode> {
    let ProduceArgs {
        connection,
        topic,
        values,
        key,
        key_separator,
        count,
    } = args;
    let records: Vec<(Option<String>, String)> = if let Some(count) = count {
        (0..count)
            .map(|i| {
                let value = if values.is_empty() {
                    format!("message-{i}")
                } else {
                    values[i % values.len()].clone()
                };
                (Some(key.clone().unwrap_or_else(|| i.to_string())), value)
            })
            .collect()
    } else if values.is_empty() {
        let mut records = Vec::new();
        for line in std::io::stdin().lock().lines() {
            let line = line?;
            let record = match key_separator
                .as_deref()
                .and_then(|sep| line.split_once(sep))
            {
                Some((k, v)) => (Some(k.to_owned()), v.to_owned()),
                None => (key.clone(), line),
            };
            records.push(record);
        }
        records
    } else {
        values.into_iter().map(|v| (key.clone(), v)).collect()
    };
    let produced = tools::produce(
        &connection.bootstrap_servers,
        &topic,
        &records,
        Duration::from_secs(connection.timeout),
    )
    .await?;
    for record in &produced {
        eprintln!("produced {topic}/{}@{}", record.partition, record.offset);
    }
    Ok(ExitCode::SUCCESS)
}

async fn consume(args: ConsumeArgs) -> anyhow::Result<ExitCode> {
    let ConsumeArgs {
        connection,
        topic,
        group,
        max_messages,
        from_beginning,
        print_key,
    } = args;
    let records = tools::consume(
        &connection.bootstrap_servers,
        &topic,
        &group,
        max_messages,
        if from_beginning {
            StartFrom::Earliest
        } else {
            StartFrom::Latest
        },
        Duration::from_secs(connection.timeout),
    )
    .await?;
    for record in &records {
        if print_key {
            println!(
                "{}\t{}",
                record.key.as_deref().unwrap_or("null"),
                record.value
            );
        } else {
            println!("{}", record.value);
        }
    }
    eprintln!("Processed a total of {} messages", records.len());
    Ok(if records.len() < max_messages {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
