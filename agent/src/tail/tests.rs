#![allow(clippy::unwrap_used)]
//! Unit tests of the tracker over real files in a temporary directory.

use super::*;
use std::fs::{self, OpenOptions};
use std::io::Write;

#[derive(Default)]
struct Collect {
    lines: Vec<(FileKey, String, u64, bool)>,
    done: Vec<FileKey>,
}

impl LineSink for Collect {
    fn line(&mut self, _: usize, file: FileKey, line: &[u8], end: u64, truncated: bool) {
        self.lines.push((
            file,
            String::from_utf8_lossy(line).into_owned(),
            end,
            truncated,
        ));
    }
    fn file_done(&mut self, _: usize, file: FileKey) {
        self.done.push(file);
    }
}

impl Collect {
    fn texts(&self) -> Vec<String> {
        self.lines.iter().map(|l| l.1.clone()).collect()
    }
}

fn append(path: &Path, s: &str) {
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    f.write_all(s.as_bytes()).unwrap();
}

fn fast() -> TailerOptions {
    TailerOptions {
        rotated_idle: Duration::ZERO,
        deleted_idle: Duration::ZERO,
        deleted_max: Duration::from_secs(60),
    }
}

fn source(dir: &Path, start_at: StartAt) -> SourceConfig {
    SourceConfig {
        start_at,
        ..SourceConfig::new([format!("{}/*.log", dir.display())])
    }
}

fn tailer(dir: &Path, start_at: StartAt, cp: Checkpoints) -> Tailer {
    Tailer::with_options(vec![source(dir, start_at)], cp, fast()).unwrap()
}

fn pump(t: &mut Tailer, sink: &mut Collect) {
    t.scan().unwrap();
    // Nothing writes meanwhile, so the reads end; a tailer that kept saying `more` would
    // fail here instead of hanging the run.
    let mut reads = 0;
    while t.read(1 << 20, sink).more {
        reads += 1;
        assert!(
            reads < 10_000,
            "the tailer still says `more` after 10,000 reads of still files"
        );
    }
    // Releases happen at the end of a read; one more round lets idle files go.
    t.read(1 << 20, sink);
}

#[test]
fn partial_line_is_held_until_its_newline() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("a.log");
    append(&p, "one\ntw");
    let mut t = tailer(dir.path(), StartAt::Beginning, Checkpoints::empty());
    let mut sink = Collect::default();
    pump(&mut t, &mut sink);
    assert_eq!(sink.texts(), ["one"]);
    assert_eq!(t.checkpoints().files[0].offset, 4);
    append(&p, "o\r\nthree\n");
    pump(&mut t, &mut sink);
    assert_eq!(sink.texts(), ["one", "two", "three"]);
    assert_eq!(t.files()[0].lag, 0);
}

#[test]
fn start_at_end_skips_existing_but_not_new_files() {
    let dir = tempfile::tempdir().unwrap();
    append(&dir.path().join("old.log"), "before\nhalf");
    let mut t = tailer(dir.path(), StartAt::End, Checkpoints::empty());
    let mut sink = Collect::default();
    pump(&mut t, &mut sink);
    assert!(sink.lines.is_empty());
    append(&dir.path().join("old.log"), "-done\nafter\n");
    append(&dir.path().join("new.log"), "fresh\n");
    pump(&mut t, &mut sink);
    let mut got = sink.texts();
    got.sort();
    assert_eq!(got, ["after", "fresh", "half-done"]);
}

#[test]
fn long_lines_and_garbage_do_not_stop_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("a.log");
    let mut cfg = source(dir.path(), StartAt::Beginning);
    cfg.max_line_bytes = 10;
    let mut data = vec![b'x'; 300_000];
    data.push(b'\n');
    data.extend_from_slice(&[0xff, 0xfe, 0, 1, b'\n']);
    data.extend_from_slice(b"ok\n");
    fs::write(&p, &data).unwrap();
    let mut t = Tailer::with_options(vec![cfg], Checkpoints::empty(), fast()).unwrap();
    let mut sink = Collect::default();
    pump(&mut t, &mut sink);
    assert_eq!(sink.lines.len(), 3);
    assert_eq!(sink.lines[0].1, "xxxxxxxxxx");
    assert!(sink.lines[0].3);
    assert_eq!(sink.lines[0].2, 300_001);
    assert_eq!(sink.lines[2].1, "ok");
    assert_eq!(t.stats().lines_truncated, 1);
    assert_eq!(t.stats().bytes_skipped, 300_000 - 10);
}

#[test]
fn truncation_restarts_the_file_under_a_new_key() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("a.log");
    append(&p, "aaaa 1\naaaa 2\n");
    let mut t = tailer(dir.path(), StartAt::Beginning, Checkpoints::empty());
    let mut sink = Collect::default();
    pump(&mut t, &mut sink);
    let k1 = sink.lines[0].0;
    fs::write(&p, b"b\n").unwrap();
    pump(&mut t, &mut sink);
    assert_eq!(sink.texts(), ["aaaa 1", "aaaa 2", "b"]);
    assert_ne!(sink.lines[2].0, k1);
    assert_eq!(sink.done, [k1]);
    assert_eq!(t.stats().truncations, 1);
}

#[test]
fn truncated_and_regrown_is_noticed_by_its_head() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("a.log");
    append(&p, "first 1\n");
    let mut t = tailer(dir.path(), StartAt::Beginning, Checkpoints::empty());
    let mut sink = Collect::default();
    pump(&mut t, &mut sink);
    fs::write(&p, b"second 1\nsecond 2\nsecond 3\n").unwrap();
    pump(&mut t, &mut sink);
    assert_eq!(
        sink.texts(),
        ["first 1", "second 1", "second 2", "second 3"]
    );
}

#[test]
fn rename_rotation_finishes_the_old_file_first() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("app.log");
    append(&p, "old 1\n");
    let mut t = tailer(dir.path(), StartAt::Beginning, Checkpoints::empty());
    let mut sink = Collect::default();
    pump(&mut t, &mut sink);
    // The writer still appends to the old inode after the rename, then reopens.
    let mut old = OpenOptions::new().append(true).open(&p).unwrap();
    fs::rename(&p, dir.path().join("app.log.1")).unwrap();
    old.write_all(b"old 2\nold 3 unterminated").unwrap();
    append(&p, "new 1\n");
    pump(&mut t, &mut sink);
    let old_key = sink.lines[0].0;
    let of = |k: bool| -> Vec<String> {
        sink.lines
            .iter()
            .filter(|l| (l.0 == old_key) == k)
            .map(|l| l.1.clone())
            .collect()
    };
    assert_eq!(of(true), ["old 1", "old 2", "old 3 unterminated"]);
    assert_eq!(of(false), ["new 1"]);
    // "old 2" (complete when the rotation was noticed) came before the new file's lines.
    assert_eq!(sink.lines[1].1, "old 2");
    assert_eq!(sink.done, [old_key]);
    assert_eq!(t.files().len(), 1);
}

#[test]
fn two_rotations_between_scans_lose_no_generation() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("app.log");
    append(&p, "gen1 a\n");
    let mut t = tailer(dir.path(), StartAt::Beginning, Checkpoints::empty());
    let mut sink = Collect::default();
    pump(&mut t, &mut sink);
    // Two rename rotations before the next scan: gen2 lives and leaves unseen.
    fs::rename(&p, dir.path().join("app.log.1")).unwrap();
    append(&p, "gen2 a\ngen2 b\n");
    fs::rename(dir.path().join("app.log.1"), dir.path().join("app.log.2")).unwrap();
    fs::rename(&p, dir.path().join("app.log.1")).unwrap();
    append(&p, "gen3 a\n");
    // Another stream beside it is not a generation of it.
    append(&dir.path().join("app.log.json"), "{\"json\": 1}\n");
    pump(&mut t, &mut sink);
    pump(&mut t, &mut sink);
    let mut texts = sink.texts();
    texts.sort();
    assert_eq!(texts, ["gen1 a", "gen2 a", "gen2 b", "gen3 a"]);
}

#[test]
fn copytruncate_reads_the_copy_before_the_truncated_file() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("app.log");
    append(&p, "gen1 line 1\n");
    let mut t = tailer(dir.path(), StartAt::Beginning, Checkpoints::empty());
    let mut sink = Collect::default();
    pump(&mut t, &mut sink);
    append(&p, "gen1 line 2\n");
    fs::copy(&p, dir.path().join("app.log.1")).unwrap();
    OpenOptions::new()
        .write(true)
        .open(&p)
        .unwrap()
        .set_len(0)
        .unwrap();
    append(&p, "gen2 line 1 and longer than before\n");
    pump(&mut t, &mut sink);
    assert_eq!(
        sink.texts(),
        [
            "gen1 line 1",
            "gen1 line 2",
            "gen2 line 1 and longer than before"
        ]
    );
    assert_eq!(t.stats().copies_found, 1);
}

#[test]
fn copytruncate_with_immediate_compression_reads_the_gzip() {
    use flate2::{Compression, write::GzEncoder};
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("app.log");
    append(&p, "gen1 line 1\n");
    let mut t = tailer(dir.path(), StartAt::Beginning, Checkpoints::empty());
    let mut sink = Collect::default();
    pump(&mut t, &mut sink);
    append(&p, "gen1 line 2\n");
    let mut gz = GzEncoder::new(
        fs::File::create(dir.path().join("app.log.1.gz")).unwrap(),
        Compression::default(),
    );
    gz.write_all(&fs::read(&p).unwrap()).unwrap();
    gz.finish().unwrap();
    OpenOptions::new()
        .write(true)
        .open(&p)
        .unwrap()
        .set_len(0)
        .unwrap();
    pump(&mut t, &mut sink);
    assert_eq!(sink.texts(), ["gen1 line 1", "gen1 line 2"]);
}

#[test]
fn restart_resumes_and_finishes_a_file_rotated_while_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    let p = dir.path().join("app.log");
    append(&p, "a 1\n");
    let mut t = tailer(dir.path(), StartAt::End, Checkpoints::empty());
    let mut sink = Collect::default();
    pump(&mut t, &mut sink);
    append(&p, "a 2\n");
    pump(&mut t, &mut sink);
    t.checkpoints().store(data.path()).unwrap();
    drop(t);
    // While stopped: more lines, a rotation, and a new file.
    append(&p, "a 3\n");
    fs::rename(&p, dir.path().join("app.log.1")).unwrap();
    append(&p, "b 1\n");
    let mut t = tailer(
        dir.path(),
        StartAt::End,
        Checkpoints::load(data.path()).unwrap(),
    );
    pump(&mut t, &mut sink);
    assert_eq!(sink.texts(), ["a 2", "a 3", "b 1"]);
}

#[test]
fn restart_after_copytruncate_while_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    let p = dir.path().join("app.log");
    append(&p, "gen1 1\n");
    let mut t = tailer(dir.path(), StartAt::Beginning, Checkpoints::empty());
    let mut sink = Collect::default();
    pump(&mut t, &mut sink);
    t.checkpoints().store(data.path()).unwrap();
    drop(t);
    append(&p, "gen1 2\n");
    fs::copy(&p, dir.path().join("app.log.1")).unwrap();
    fs::write(&p, b"gen2 1 is a longer line than the old file\n").unwrap();
    let mut t = tailer(
        dir.path(),
        StartAt::End,
        Checkpoints::load(data.path()).unwrap(),
    );
    pump(&mut t, &mut sink);
    assert_eq!(
        sink.texts(),
        [
            "gen1 1",
            "gen1 2",
            "gen2 1 is a longer line than the old file"
        ]
    );
}

#[test]
fn inode_reuse_is_a_new_file() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("app.log");
    append(&p, "first file\n");
    let mut t = tailer(dir.path(), StartAt::Beginning, Checkpoints::empty());
    let mut sink = Collect::default();
    pump(&mut t, &mut sink);
    let cp = t.checkpoints();
    drop(t);
    // Another file with the same inode and size: only the head tells them apart.
    fs::write(&p, b"other file\nplus more\n").unwrap();
    let mut t = tailer(dir.path(), StartAt::Beginning, cp);
    pump(&mut t, &mut sink);
    assert_eq!(sink.texts(), ["first file", "other file", "plus more"]);
}

#[test]
fn deleted_file_is_finished_and_released() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("app.log");
    append(&p, "x 1\n");
    let mut t = tailer(dir.path(), StartAt::Beginning, Checkpoints::empty());
    let mut sink = Collect::default();
    pump(&mut t, &mut sink);
    let mut w = OpenOptions::new().append(true).open(&p).unwrap();
    fs::remove_file(&p).unwrap();
    w.write_all(b"x 2\n").unwrap();
    pump(&mut t, &mut sink);
    assert_eq!(sink.texts(), ["x 1", "x 2"]);
    assert!(t.files().is_empty(), "released");
    assert_eq!(t.stats().files_released, 1);
}

#[test]
fn symlinked_path_follows_its_target() {
    let dir = tempfile::tempdir().unwrap();
    let real = tempfile::tempdir().unwrap();
    let target = real.path().join("app-1.txt");
    append(&target, "one\n");
    std::os::unix::fs::symlink(&target, dir.path().join("current.log")).unwrap();
    let mut t = tailer(dir.path(), StartAt::Beginning, Checkpoints::empty());
    let mut sink = Collect::default();
    pump(&mut t, &mut sink);
    // Repoint the link to a new file (rotation by symlink).
    let target2 = real.path().join("app-2.txt");
    append(&target, "two\n");
    append(&target2, "three\n");
    let tmp = dir.path().join("current.tmp");
    std::os::unix::fs::symlink(&target2, &tmp).unwrap();
    fs::rename(&tmp, dir.path().join("current.log")).unwrap();
    pump(&mut t, &mut sink);
    assert_eq!(sink.texts(), ["one", "two", "three"]);
}

#[test]
fn short_file_keeps_its_identity_across_restart() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("a.log");
    append(&p, "s\n");
    let mut t = tailer(dir.path(), StartAt::Beginning, Checkpoints::empty());
    let mut sink = Collect::default();
    pump(&mut t, &mut sink);
    let cp = t.checkpoints();
    assert_eq!(cp.files[0].id.head_len, 2);
    append(&p, &"y".repeat(3000));
    append(&p, "\n");
    let mut t = tailer(dir.path(), StartAt::Beginning, cp);
    pump(&mut t, &mut sink);
    assert_eq!(sink.lines.len(), 2, "resumed, not re-read");
    assert_eq!(t.checkpoints().files[0].id.head_len as usize, HEAD_WINDOW);
}

#[test]
fn resumed_short_file_widens_its_head_before_copytruncate() {
    let dir = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    let p = dir.path().join("app.log");
    let ct = |n: u32| {
        fs::copy(&p, dir.path().join(format!("app.log.{n}"))).unwrap();
        OpenOptions::new()
            .write(true)
            .open(&p)
            .unwrap()
            .set_len(0)
            .unwrap();
    };
    let mut t = tailer(dir.path(), StartAt::Beginning, Checkpoints::empty());
    let mut sink = Collect::default();
    append(&p, "L0\n");
    t.scan().unwrap();
    ct(1);
    t.scan().unwrap();
    ct(2);
    t.checkpoints().store(data.path()).unwrap();
    drop(t);
    append(&p, "L1\n");
    let mut t = tailer(
        dir.path(),
        StartAt::Beginning,
        Checkpoints::load(data.path()).unwrap(),
    );
    t.scan().unwrap();
    ct(3);
    pump(&mut t, &mut sink);
    pump(&mut t, &mut sink);
    // Each once (the two files' lines come in either order).
    let mut texts = sink.texts();
    texts.sort();
    assert_eq!(texts, ["L0", "L1"]);
}

#[test]
fn a_truncation_seen_by_read_and_scan_restarts_the_file_once() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("app.log");
    append(&p, &"old line\n".repeat(100));
    let mut t = tailer(dir.path(), StartAt::Beginning, Checkpoints::empty());
    let mut sink = Collect::default();
    t.scan().unwrap();
    t.read(300, &mut sink);
    // Truncated and regrown past the read position: the next read sees the new head...
    fs::write(&p, "new line\n".repeat(200)).unwrap();
    t.read(300, &mut sink);
    // ...and then the file shrinks below it before the scan: both signals at once.
    OpenOptions::new()
        .write(true)
        .open(&p)
        .unwrap()
        .set_len(0)
        .unwrap();
    append(&p, "new 1\n");
    pump(&mut t, &mut sink);
    append(&p, "new 2\n");
    pump(&mut t, &mut sink);
    let new: Vec<_> = sink
        .texts()
        .into_iter()
        .filter(|l| l.starts_with("new"))
        .collect();
    assert_eq!(new, ["new 1", "new 2"]);
}

/// `app.log*` matches the copies: a copy's inode may be one just freed by a deleted
/// generation, still tracked under that generation's stream. Its new content is the live
/// file's copy, not new data.
#[test]
fn a_copy_in_a_reused_inode_is_not_counted_again() {
    let dir = tempfile::tempdir().unwrap();
    let live = dir.path().join("app.log");
    let old = dir.path().join("app.log.1");
    append(&old, "old 1\nold 2\n");
    append(&live, "live 1\nlive 2\nlive 3\n");
    let source = SourceConfig {
        start_at: StartAt::Beginning,
        exclude: vec!["*.gz".to_owned()],
        ..SourceConfig::new([format!("{}/app.log*", dir.path().display())])
    };
    let mut t = Tailer::with_options(vec![source], Checkpoints::empty(), fast()).unwrap();
    let mut sink = Collect::default();
    pump(&mut t, &mut sink);
    // logrotate's next copytruncate, its copy landing in the inode of the generation it
    // just deleted: app.log.1 keeps its inode and now holds the live file's lines.
    let ino = fs::metadata(&old).unwrap().ino();
    let copy = fs::read(&live).unwrap();
    let mut f = OpenOptions::new().write(true).open(&old).unwrap();
    f.set_len(0).unwrap();
    f.write_all(&copy).unwrap();
    drop(f);
    assert_eq!(fs::metadata(&old).unwrap().ino(), ino);
    OpenOptions::new()
        .write(true)
        .open(&live)
        .unwrap()
        .set_len(0)
        .unwrap();
    append(&live, "live 4 after the rotation\n");
    pump(&mut t, &mut sink);
    pump(&mut t, &mut sink);
    let mut texts = sink.texts();
    texts.sort();
    assert_eq!(
        texts,
        [
            "live 1",
            "live 2",
            "live 3",
            "live 4 after the rotation",
            "old 1",
            "old 2"
        ]
    );
}
