//! Image commands.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use futures::StreamExt;
use hyper::Method;
use strata_api_types::image::{
    DeleteResponseItem, HistoryItem, IdResponse, ImagePruneReport, ImageSummary,
};
use tokio::io::AsyncWriteExt;

use crate::client::{next_chunk, q, Client, ReqBody};
use crate::progress;
use crate::table::{ago_unix, human_size, print_json_lines, short_id, Table};

#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    #[command(alias = "list")]
    Ls(ImagesArgs),
    Inspect(NamesArgs),
    #[command(alias = "remove")]
    Rm(RmiArgs),
    Tag(TagArgs),
    History(HistoryArgs),
    Load(LoadArgs),
    Save(SaveArgs),
    Import(ImportArgs),
    Build(BuildArgs),
    /// Remove unused images.
    Prune(PruneArgs),
}

pub async fn dispatch(client: &Client, c: ImageCommand) -> anyhow::Result<u8> {
    match c {
        ImageCommand::Ls(a) => images(client, a).await,
        ImageCommand::Inspect(a) => {
            let mut out = Vec::new();
            let mut code = 0;
            for n in &a.names {
                match client.get(&format!("/images/{}/json", q(n))).await {
                    Ok(v) => out.push(v),
                    Err(e) => {
                        eprintln!("Error response from daemon: {e}");
                        code = 1;
                    }
                }
            }
            println!("{}", serde_json::to_string_pretty(&out)?);
            Ok(code)
        }
        ImageCommand::Rm(a) => rmi(client, a).await,
        ImageCommand::Tag(a) => tag(client, a).await,
        ImageCommand::History(a) => history(client, a).await,
        ImageCommand::Load(a) => load(client, a).await,
        ImageCommand::Save(a) => save(client, a).await,
        ImageCommand::Import(a) => import(client, a).await,
        ImageCommand::Build(a) => build(client, a).await,
        ImageCommand::Prune(a) => {
            let filters = if a.all {
                r#"{"dangling":["false"]}"#
            } else {
                r#"{"dangling":["true"]}"#
            };
            let r: ImagePruneReport = client
                .post_as(&format!("/images/prune?filters={}", q(filters)))
                .await?;
            for d in &r.images_deleted {
                match d {
                    DeleteResponseItem::Untagged(u) => println!("untagged: {u}"),
                    DeleteResponseItem::Deleted(x) => println!("deleted: {x}"),
                }
            }
            println!(
                "Total reclaimed space: {}",
                human_size(r.space_reclaimed as f64)
            );
            Ok(0)
        }
    }
}

#[derive(Debug, Args)]
pub struct NamesArgs {
    #[arg(required = true)]
    names: Vec<String>,
}

#[derive(Debug, Args)]
pub struct PruneArgs {
    /// Remove all unused images, not just dangling ones.
    #[arg(short, long)]
    all: bool,
    #[arg(short, long)]
    force: bool,
}

#[derive(Debug, Args)]
pub struct ImagesArgs {
    /// Show all images.
    #[arg(short, long)]
    all: bool,
    /// Only show image IDs.
    #[arg(short, long)]
    quiet: bool,
    /// Output format: "json".
    #[arg(long)]
    format: Option<String>,
    /// Don't truncate output.
    #[arg(long)]
    no_trunc: bool,
}

pub async fn images(client: &Client, a: ImagesArgs) -> anyhow::Result<u8> {
    let items: Vec<ImageSummary> = client
        .get_as(&format!("/images/json?all={}", a.all))
        .await?;
    if a.format.as_deref() == Some("json") {
        print_json_lines(&items);
        return Ok(0);
    }
    if a.quiet {
        for i in &items {
            println!("{}", short_id(&i.id));
        }
        return Ok(0);
    }
    let mut t = Table::new(&["REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE"]);
    for i in &items {
        let id = if a.no_trunc {
            i.id.clone()
        } else {
            short_id(&i.id)
        };
        let tags = i.repo_tags.clone();
        let created = ago_unix(i.created);
        let size = human_size(i.size as f64);
        if tags.is_empty() {
            t.row(vec![
                "<none>".into(),
                "<none>".into(),
                id.clone(),
                created.clone(),
                size.clone(),
            ]);
        }
        for tag in tags {
            let (repo, tag) = tag.rsplit_once(':').unwrap_or((&tag, "<none>"));
            t.row(vec![
                repo.into(),
                tag.into(),
                id.clone(),
                created.clone(),
                size.clone(),
            ]);
        }
    }
    t.print();
    Ok(0)
}

#[derive(Debug, Args)]
pub struct RmiArgs {
    #[arg(required = true)]
    names: Vec<String>,
    /// Force removal of the image.
    #[arg(short, long)]
    force: bool,
    /// Do not delete untagged parents.
    #[arg(long)]
    no_prune: bool,
}

pub async fn rmi(client: &Client, a: RmiArgs) -> anyhow::Result<u8> {
    let mut code = 0;
    for n in &a.names {
        let path = format!("/images/{}?force={}&noprune={}", q(n), a.force, a.no_prune);
        match client.delete_as::<Vec<DeleteResponseItem>>(&path).await {
            Ok(items) => {
                for d in items {
                    match d {
                        DeleteResponseItem::Untagged(u) => println!("Untagged: {u}"),
                        DeleteResponseItem::Deleted(x) => println!("Deleted: {x}"),
                    }
                }
            }
            Err(e) => {
                eprintln!("Error response from daemon: {e}");
                code = 1;
            }
        }
    }
    Ok(code)
}

#[derive(Debug, Args)]
pub struct TagArgs {
    source: String,
    target: String,
}

fn split_ref(r: &str) -> (String, String) {
    match r.rsplit_once(':') {
        Some((repo, tag)) if !tag.contains('/') => (repo.to_string(), tag.to_string()),
        _ => (r.to_string(), "latest".to_string()),
    }
}

pub async fn tag(client: &Client, a: TagArgs) -> anyhow::Result<u8> {
    let (repo, tag) = split_ref(&a.target);
    client
        .post(
            &format!(
                "/images/{}/tag?repo={}&tag={}",
                q(&a.source),
                q(&repo),
                q(&tag)
            ),
            None,
        )
        .await?;
    Ok(0)
}

#[derive(Debug, Args)]
pub struct HistoryArgs {
    image: String,
    /// Don't truncate output.
    #[arg(long)]
    no_trunc: bool,
    /// Output format: "json".
    #[arg(long)]
    format: Option<String>,
}

pub async fn history(client: &Client, a: HistoryArgs) -> anyhow::Result<u8> {
    let items: Vec<HistoryItem> = client
        .get_as(&format!("/images/{}/history", q(&a.image)))
        .await?;
    if a.format.as_deref() == Some("json") {
        print_json_lines(&items);
        return Ok(0);
    }
    let mut t = Table::new(&["IMAGE", "CREATED", "CREATED BY", "SIZE", "COMMENT"]);
    for i in &items {
        t.row(vec![
            if i.id == "<missing>" || a.no_trunc {
                i.id.clone()
            } else {
                short_id(&i.id)
            },
            ago_unix(i.created),
            if a.no_trunc {
                i.created_by.clone()
            } else {
                super::system::truncate(&i.created_by, 45)
            },
            human_size(i.size as f64),
            i.comment.clone(),
        ]);
    }
    t.print();
    Ok(0)
}

#[derive(Debug, Args)]
pub struct LoadArgs {
    /// Read from tar archive file, instead of STDIN.
    #[arg(short, long)]
    input: Option<PathBuf>,
    /// Suppress the load output.
    #[arg(short, long)]
    quiet: bool,
}

fn file_stream(
    path: Option<PathBuf>,
) -> std::pin::Pin<Box<dyn futures::Stream<Item = std::io::Result<bytes::Bytes>> + Send>> {
    match path {
        Some(p) => Box::pin(
            futures::stream::once(async move { tokio::fs::File::open(p).await })
                .map(|f| match f {
                    Ok(f) => tokio_util_stream(f).boxed(),
                    Err(e) => futures::stream::once(async move { Err(e) }).boxed(),
                })
                .flatten(),
        ),
        None => Box::pin(tokio_util_stream(tokio::io::stdin())),
    }
}

fn tokio_util_stream<R: tokio::io::AsyncRead + Send + Unpin + 'static>(
    r: R,
) -> impl futures::Stream<Item = std::io::Result<bytes::Bytes>> + Send {
    futures::stream::unfold(r, |mut r| async move {
        use tokio::io::AsyncReadExt;
        let mut buf = vec![0u8; 256 * 1024];
        match r.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok(bytes::Bytes::from(buf)), r))
            }
            Err(e) => Some((Err(e), r)),
        }
    })
}

pub async fn load(client: &Client, a: LoadArgs) -> anyhow::Result<u8> {
    let resp = client
        .request(
            Method::POST,
            &format!("/images/load?quiet={}", a.quiet),
            ReqBody::Stream(file_stream(a.input), "application/x-tar"),
        )
        .await?;
    progress::render(resp.into_body(), false).await?;
    Ok(0)
}

#[derive(Debug, Args)]
pub struct SaveArgs {
    #[arg(required = true)]
    images: Vec<String>,
    /// Write to a file, instead of STDOUT.
    #[arg(short, long)]
    output: Option<PathBuf>,
}

pub async fn save(client: &Client, a: SaveArgs) -> anyhow::Result<u8> {
    let names: Vec<String> = a.images.iter().map(|n| format!("names={}", q(n))).collect();
    let resp = client
        .request(
            Method::GET,
            &format!("/images/get?{}", names.join("&")),
            ReqBody::Empty,
        )
        .await?;
    let mut body = resp.into_body();
    let mut out: Box<dyn tokio::io::AsyncWrite + Unpin + Send> = match &a.output {
        Some(p) => Box::new(tokio::fs::File::create(p).await?),
        None => {
            if std::io::IsTerminal::is_terminal(&std::io::stdout()) {
                anyhow::bail!(
                    "cowardly refusing to save to a terminal. Use the -o flag or redirect"
                );
            }
            Box::new(tokio::io::stdout())
        }
    };
    let bar = a
        .output
        .as_ref()
        .map(|_| indicatif::ProgressBar::new_spinner());
    while let Some(chunk) = next_chunk(&mut body).await? {
        out.write_all(&chunk).await?;
        if let Some(b) = &bar {
            b.inc(chunk.len() as u64);
            b.set_message(format!("{} written", human_size(b.position() as f64)));
        }
    }
    out.flush().await?;
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    Ok(0)
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// A file path, or - for STDIN.
    file: String,
    /// Repository and tag for the image.
    reference: Option<String>,
    /// Apply Dockerfile instruction to the created image.
    #[arg(short, long)]
    change: Vec<String>,
    /// Set commit message for imported image.
    #[arg(short, long)]
    message: Option<String>,
}

pub async fn import(client: &Client, a: ImportArgs) -> anyhow::Result<u8> {
    let mut path = "/images/create?fromSrc=-".to_string();
    if let Some(r) = &a.reference {
        let (repo, tag) = split_ref(r);
        path.push_str(&format!("&repo={}&tag={}", q(&repo), q(&tag)));
    }
    for c in &a.change {
        path.push_str(&format!("&changes={}", q(c)));
    }
    if let Some(m) = &a.message {
        path.push_str(&format!("&message={}", q(m)));
    }
    let input = if a.file == "-" {
        None
    } else {
        Some(PathBuf::from(&a.file))
    };
    let resp = client
        .request(
            Method::POST,
            &path,
            ReqBody::Stream(file_stream(input), "application/x-tar"),
        )
        .await?;
    progress::render(resp.into_body(), false).await?;
    Ok(0)
}

#[derive(Debug, Args)]
pub struct CommitArgs {
    container: String,
    reference: Option<String>,
    /// Author.
    #[arg(short, long)]
    author: Option<String>,
    /// Apply Dockerfile instruction to the created image.
    #[arg(short, long)]
    change: Vec<String>,
    /// Commit message.
    #[arg(short, long)]
    message: Option<String>,
    /// Pause container during commit (Strata never pauses; accepted for compatibility).
    #[arg(short, long, default_value_t = true)]
    pause: bool,
}

pub async fn commit(client: &Client, a: CommitArgs) -> anyhow::Result<u8> {
    let mut path = format!("/commit?container={}&pause={}", q(&a.container), a.pause);
    if let Some(r) = &a.reference {
        let (repo, tag) = split_ref(r);
        path.push_str(&format!("&repo={}&tag={}", q(&repo), q(&tag)));
    }
    if let Some(m) = &a.message {
        path.push_str(&format!("&comment={}", q(m)));
    }
    if let Some(au) = &a.author {
        path.push_str(&format!("&author={}", q(au)));
    }
    for c in &a.change {
        path.push_str(&format!("&changes={}", q(c)));
    }
    let r: IdResponse = client
        .typed(Method::POST, &path, ReqBody::Json(serde_json::json!({})))
        .await?;
    println!("{}", r.id);
    Ok(0)
}

#[derive(Debug, Args)]
pub struct BuildArgs {
    /// Build context directory.
    context: PathBuf,
    /// Name and optionally a tag (name:tag).
    #[arg(short, long)]
    tag: Vec<String>,
    /// Name of the Dockerfile (default: PATH/Dockerfile).
    #[arg(short, long)]
    file: Option<String>,
    /// Do not use cache when building the image.
    #[arg(long)]
    no_cache: bool,
    /// Set build-time variables.
    #[arg(long)]
    build_arg: Vec<String>,
    /// Suppress the build output and print image ID on success.
    #[arg(short, long)]
    quiet: bool,
}

pub async fn build(client: &Client, a: BuildArgs) -> anyhow::Result<u8> {
    let context = a.context.clone();
    let tar = tokio::task::spawn_blocking(move || -> std::io::Result<Vec<u8>> {
        let mut b = tar::Builder::new(Vec::new());
        b.follow_symlinks(false);
        b.append_dir_all(".", &context)?;
        b.into_inner()
    })
    .await??;
    let args: std::collections::BTreeMap<String, String> = super::volume::kv(&a.build_arg)?;
    let mut path = format!(
        "/build?rm=1&nocache={}&q={}&buildargs={}",
        a.no_cache,
        a.quiet,
        q(&serde_json::to_string(&args)?)
    );
    for t in &a.tag {
        path.push_str(&format!("&t={}", q(t)));
    }
    if let Some(f) = &a.file {
        path.push_str(&format!("&dockerfile={}", q(f)));
    }
    let body = futures::stream::once(async move { Ok(bytes::Bytes::from(tar)) });
    let resp = client
        .request(
            Method::POST,
            &path,
            ReqBody::Stream(Box::pin(body), "application/x-tar"),
        )
        .await?;
    let id = progress::render(resp.into_body(), a.quiet).await?;
    if a.quiet {
        if let Some(id) = id {
            println!("{id}");
        }
    }
    Ok(0)
}
