import io
import sys
import tarfile

import numpy as np
import pytest
import torch
from PIL import Image

from macrl_hub.data import DataError, decode_images, load_dataset


def _png(arr, mode=None) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr, mode=mode).save(buf, format='PNG')
    return buf.getvalue()


def _jpeg(arr) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format='JPEG', quality=95)
    return buf.getvalue()


def test_cifar_archive_test_split(cifar_test):
    d = cifar_test
    assert d.images.shape == (10000, 3, 32, 32) and d.images.dtype == torch.uint8
    assert d.classes[:3] == ['airplane', 'automobile', 'bird'] and len(d.classes) == 10
    assert torch.equal(d.labels.bincount(), torch.full((10,), 1000))
    assert d.skipped == 0 and 60 < d.images.float().mean() < 200
    sub = d.subset(100, seed=3)
    assert len(sub) == 100 and torch.equal(sub.images, d.subset(100, seed=3).images)


def _write_tree(root, split='train', n=3, corrupt=False):
    rng = np.random.default_rng(0)
    for c in ('cat', 'dog'):
        (root / split / c).mkdir(parents=True)
        for i in range(n):
            (root / split / c / f'{i}.jpg').write_bytes(_jpeg(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)))
    if corrupt:
        (root / split / 'cat' / 'bad.jpg').write_bytes(b'\xff\xd8\xff\xe0 this is not a jpeg')


def test_folder_and_archive_give_the_same(tmp_path):
    _write_tree(tmp_path / 'ds')
    a = load_dataset(str(tmp_path / 'ds'), 'train', size=32)
    assert a.images.shape == (6, 3, 32, 32) and a.classes == ['cat', 'dog']
    arc = tmp_path / 'ds.tar.gz'
    with tarfile.open(arc, 'w:gz') as tar:
        tar.add(tmp_path / 'ds', arcname='mydata')  # a top-level folder, as imagenette2-160.tgz
    b = load_dataset(str(arc), 'train', size=32)
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)


def test_corrupt_image_skipped_or_named(tmp_path):
    _write_tree(tmp_path / 'ds', corrupt=True)
    with pytest.warns(UserWarning, match='skipped 1 unreadable'):
        d = load_dataset(str(tmp_path / 'ds'), 'train', size=32)
    assert len(d) == 6 and d.skipped == 1
    with pytest.raises(DataError, match='bad.jpg'):
        load_dataset(str(tmp_path / 'ds'), 'train', size=32, on_error='raise')


def test_odd_image_modes_become_rgb():
    g = np.full((8, 8), 128, np.uint8)
    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[..., 0] = 255
    rgba[..., 3] = 255
    deep = np.full((8, 8), 65535, np.uint16)
    imgs, keep = decode_images([_png(g), _png(rgba), _png(deep)], ['g', 'rgba', '16'], size=8)
    assert imgs.shape == (3, 3, 8, 8) and keep == [0, 1, 2]
    assert torch.all(imgs[0] == 128)
    assert torch.all(imgs[1, 0] == 255) and torch.all(imgs[1, 1] == 0)
    assert torch.all(imgs[2] == 255)
    # one scale for every 16-bit image, its full range: a dark one stays dark (it was scaled by 255, so a 16-bit
    # value of 200 became 200 of 255 in one image and 1 of 255 in another)
    dark, mid = np.full((8, 8), 200, np.uint16), np.full((8, 8), 32896, np.uint16)
    with pytest.warns(UserWarning, match='1 of 2 16-bit images hold values up to 255 only'):
        imgs, _ = decode_images([_png(dark), _png(mid)], ['dark', 'mid'], size=8)
    assert torch.all(imgs[0] == 1) and torch.all(imgs[1] == 128)


def test_transparent_pixels_are_composited_on_white():
    """Transparency means the white page behind the image: alpha 0 -> white whatever the colour under it, alpha 128 ->
    halfway to white; in RGBA, LA and palette-with-transparency PNGs alike."""
    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[..., 0] = 255  # red everywhere ...
    rgba[:, :4, 3] = 0  # ... fully transparent on the left half
    rgba[:, 4:, 3] = 128  # half transparent on the right half
    la = np.zeros((8, 8, 2), np.uint8)  # black, fully transparent
    pal = Image.fromarray(np.zeros((8, 8), np.uint8), mode='P')
    pal.putpalette([0, 0, 0] * 256)  # index 0 black, marked transparent
    buf = io.BytesIO()
    pal.save(buf, format='PNG', transparency=0)
    imgs, keep = decode_images([_png(rgba), _png(la, mode='LA'), buf.getvalue()], ['rgba', 'la', 'p'], size=8)
    assert keep == [0, 1, 2]
    assert torch.all(imgs[0, :, :, :4] == 255)  # transparent red -> white
    assert torch.all(imgs[0, 0, :, 4:] == 255)  # half transparent red over white: red stays full ...
    assert torch.all((imgs[0, 1:, :, 4:] - 127).abs() <= 1)  # ... green and blue halfway
    assert torch.all(imgs[1] == 255) and torch.all(imgs[2] == 255)  # transparent black -> white


def test_missing_split_empty_and_bad_paths(tmp_path):
    _write_tree(tmp_path / 'ds')
    with pytest.raises(DataError, match=r"split 'test' not found.*splits present: \['train'\]"):
        load_dataset(str(tmp_path / 'ds'), 'test')
    with pytest.raises(DataError, match='not found'):
        load_dataset(str(tmp_path / 'nope'), 'train')
    (tmp_path / 'x.zip').write_bytes(b'PK')
    with pytest.raises(DataError, match='neither a folder nor a tar'):
        load_dataset(str(tmp_path / 'x.zip'))
    (tmp_path / 'empty' / 'train' / 'cat').mkdir(parents=True)
    with pytest.raises(DataError, match='no images'):
        load_dataset(str(tmp_path / 'empty'), 'train')
    # a bare <folder>/<class>/* tree is the train split, never the test one (kNN would score the bank on itself)
    bare = tmp_path / 'ds' / 'train'
    assert len(load_dataset(str(bare), 'train', size=8)) == len(load_dataset(str(tmp_path / 'ds'), 'train', size=8))
    with pytest.raises(DataError, match=r"split 'test' not found.*bare <folder>/<class>/<image> tree is the train"):
        load_dataset(str(bare), 'test')


def test_threaded_jpeg_decode_keeps_order_and_marks_bad_files():
    """CIFAR's 50,000 JPEGs are decoded in chunks over threads: same images, same order, a bad file only None."""
    import io
    from macrl_hub.data import _decode_jpeg_chunk, _iter_jpegs
    g = torch.Generator().manual_seed(0)
    blobs = []
    for i in range(11):
        buf = io.BytesIO()
        Image.fromarray(torch.randint(0, 256, (8, 8, 3), generator=g, dtype=torch.uint8).numpy()).save(buf, 'JPEG')
        blobs.append(buf.getvalue())
    blobs[6] = b'\xff\xd8\xff\xe0 not a jpeg'
    datas = [torch.frombuffer(bytearray(b), dtype=torch.uint8) for b in blobs]
    one = [_decode_jpeg_chunk([d])[0] for d in datas]
    for many in (list(_iter_jpegs(datas, chunk=3)), list(_iter_jpegs(datas, chunk_bytes=1))):  # by count, by bytes
        assert len(many) == 11 and many[6] is None and one[6] is None
        assert all(np.array_equal(a, b) for i, (a, b) in enumerate(zip(one, many)) if i != 6)


def test_images_are_brought_to_size_as_they_are_decoded():
    """A 4000 x 3000 photo is ~36 MB decoded: a folder of them was held at full size until the end (1,000 photos:
    ~36 GB). Now each is resized in the worker that decoded it, and a chunk holds at most `chunk_bytes` of JPEG."""
    from macrl_hub.data import _chunks, _decode_jpeg_chunk, _resize_center
    rng = np.random.default_rng(0)
    arrs = [rng.integers(0, 255, (48, 80, 3), dtype=np.uint8) for _ in range(3)]
    datas = [torch.frombuffer(bytearray(_jpeg(a)), dtype=torch.uint8) for a in arrs]
    small = _decode_jpeg_chunk(datas, size=16)
    full = _decode_jpeg_chunk(datas)
    assert [a.shape for a in small] == [(16, 16, 3)] * 3 and full[0].shape == (48, 80, 3)
    assert all(np.array_equal(s, _resize_center(f, 16)) for s, f in zip(small, full))
    sizes = [d.numel() for d in datas]
    assert [len(c) for c in _chunks(datas, 2048, sizes[0] + sizes[1])] == [2, 1]
    assert [len(c) for c in _chunks(datas, 2, 1 << 30)] == [2, 1] and _chunks([], 2, 1) == []
    png = _png(arrs[0])  # Pillow's path (PNG, CMYK, 16-bit) likewise
    images, _ = decode_images([png] + [_jpeg(a) for a in arrs], list('abcd'), size=16)
    assert images.shape == (4, 3, 16, 16)


def test_size_none_takes_the_smallest_shorter_side_without_upscaling():
    rng = np.random.default_rng(0)
    portrait = [_png(rng.integers(0, 255, (40, 30, 3), dtype=np.uint8)) for _ in range(2)]
    images, _ = decode_images(portrait, ['a', 'b'])
    assert images.shape == (2, 3, 30, 30)  # was 40 x 40: the height taken for the side, the width upscaled
    first = np.asarray(Image.open(io.BytesIO(portrait[0])))
    assert torch.equal(images[0], torch.from_numpy(first[5:35]).permute(2, 0, 1))
    mixed, _ = decode_images(portrait + [_png(rng.integers(0, 255, (24, 50, 3), dtype=np.uint8))], list('abc'))
    assert mixed.shape == (3, 3, 24, 24)


def test_progress_on_stderr_while_reading_and_decoding(tmp_path, capsys):
    """Decoding CIFAR-10's train split takes ~14 s on one core: say so while it runs, unless progress=False."""
    _write_tree(tmp_path / 'ds')
    arc = tmp_path / 'ds.tar.gz'
    with tarfile.open(arc, 'w:gz') as tar:
        tar.add(tmp_path / 'ds', arcname='mydata')
    load_dataset(str(arc), 'train', size=32)
    captured = capsys.readouterr()
    assert 'reading ds.tar.gz' in captured.err and 'decoding 6 train images from ds.tar.gz' in captured.err
    assert captured.out == ''
    load_dataset(str(arc), 'train', size=32, progress=False)
    assert capsys.readouterr().err == ''


def test_decode_progress_counts_every_image_once(monkeypatch):
    """JPEGs advance the bar by chunk, Pillow's images (PNGs, a bad JPEG retried) one by one: N in all."""
    from macrl_hub import data

    class Bar:
        n, closed = 0, False

        def update(self, k):
            self.n += k

        def close(self):
            self.closed = True
    bar = Bar()
    monkeypatch.setattr(data, '_bar', lambda desc, total=None, unit='it': bar if desc else None)
    rng = np.random.default_rng(0)
    blobs = [_jpeg(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)) for _ in range(5)]
    blobs += [_png(np.full((8, 8), 7, np.uint8)), b'\xff\xd8\xff\xe0 not a jpeg']
    with pytest.warns(UserWarning, match='skipped 1'):
        decode_images(blobs, [str(i) for i in range(len(blobs))], size=8, progress='decoding')
    assert bar.n == len(blobs) and bar.closed


def test_jpegs_decode_to_rgb_as_pil_does(tmp_path):
    """Channel order and values of the decoder (threaded, batch) against PIL's own decode of the same files: a red,
    a green and a blue image (a BGR mix-up would swap red and blue)."""
    from PIL import Image
    for c, rgb in (('red', (220, 30, 30)), ('green', (30, 200, 40)), ('blue', (20, 40, 210))):
        (tmp_path / 'ds' / 'train' / c).mkdir(parents=True)
        arr = np.zeros((32, 32, 3), np.uint8) + np.array(rgb, np.uint8)
        arr[8:16, 8:16] = 255 - arr[8:16, 8:16]  # some structure
        (tmp_path / 'ds' / 'train' / c / '0.jpg').write_bytes(_jpeg(arr))
    d = load_dataset(str(tmp_path / 'ds'), 'train', size=32)
    for img, label in zip(d.images, d.labels):
        path = next((tmp_path / 'ds' / 'train' / d.classes[int(label)]).iterdir())
        ref = torch.from_numpy(np.asarray(Image.open(path).convert('RGB'))).permute(2, 0, 1).int()
        assert (img.int() - ref).abs().max() <= 2, d.classes[int(label)]
    mean = {d.classes[int(l)]: img.float().mean(dim=(1, 2)) for img, l in zip(d.images, d.labels)}
    assert mean['red'].argmax() == 0 and mean['green'].argmax() == 1 and mean['blue'].argmax() == 2


def test_hidden_entries_skipped_nested_folders_read_and_other_split_names(tmp_path):
    """As torchvision's ImageFolder: dot files and folders are not data (.ipynb_checkpoints/ became a class, macOS's
    ._x.jpg a "corrupt" image) and images below a class folder belong to it (they were silently ignored); split
    folders may be named training/validation too."""
    rng = np.random.default_rng(0)

    def img():
        return _jpeg(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8))
    root = tmp_path / 'ds'
    for split in ('training', 'validation'):
        for c in ('cat', 'dog'):
            (root / split / c / 'more' / 'deeper').mkdir(parents=True)
            (root / split / c / '0.jpg').write_bytes(img())
            (root / split / c / 'more' / 'deeper' / '1.jpg').write_bytes(img())
            (root / split / c / '._0.jpg').write_bytes(b'\x00\x05\x16\x07 AppleDouble')
            (root / split / c / '.hidden').mkdir()
            (root / split / c / '.hidden' / '2.jpg').write_bytes(img())
        (root / split / '.ipynb_checkpoints').mkdir()
        (root / split / '.ipynb_checkpoints' / 'x.jpg').write_bytes(img())
    arc = tmp_path / 'ds.tar.gz'
    with tarfile.open(arc, 'w:gz') as tar:
        tar.add(root, arcname='mine')
    for spec in (root, arc):
        for split in ('train', 'test'):
            d = load_dataset(str(spec), split, size=32, progress=False)
            assert d.classes == ['cat', 'dog'] and len(d) == 4 and d.skipped == 0, (spec, split)


def test_a_flat_folder_of_images_is_told_where_images_go(tmp_path):
    (tmp_path / 'flat').mkdir()
    for i in range(3):
        (tmp_path / 'flat' / f'{i}.png').write_bytes(_png(np.full((8, 8, 3), i, np.uint8)))
    with pytest.raises(DataError, match=r'holds 3 images but no class folders: .*one folder, e\.g\. .*/flat/images/'):
        load_dataset(str(tmp_path / 'flat'), 'train')


def test_layouts_the_recursive_reader_must_not_misread(tmp_path):
    """Reading images below a class folder must not turn a whole dataset into one class (--data one level too high:
    its held-out images would be pretrained on), nor a repeated split folder into a class; an archive under a
    dot-folder (.data/) is read; a class tree with a class called 'valid' stays a class tree."""
    rng = np.random.default_rng(0)

    def put(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(_jpeg(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)))
    for split in ('train', 'val'):
        for c in ('cat', 'dog'):
            put(tmp_path / 'high' / 'imagenette' / split / c / '0.jpg')
            put(tmp_path / 'twice' / split / split / c / '0.jpg')
            put(tmp_path / '.data' / 'ds' / split / c / '0.jpg')
    with pytest.raises(DataError, match=r'imagenette holds split folders \[.train., .val.\]: it is a dataset.*'
                                        r'pass --data .*high/imagenette'):
        load_dataset(str(tmp_path / 'high'), 'train')
    with pytest.raises(DataError, match=r'twice/train/train is a split folder inside .*twice/train'):
        load_dataset(str(tmp_path / 'twice'), 'train')
    for name, folder in (('twice', tmp_path / 'twice'), ('dot', tmp_path / '.data')):
        arc = tmp_path / f'{name}.tar'
        with tarfile.open(arc, 'w') as tar:
            tar.add(folder, arcname=folder.name)
        for split in ('train', 'test'):
            d = load_dataset(str(arc), split, size=32, progress=False)
            assert d.classes == ['cat', 'dog'] and len(d) == 2, (name, split)
    for c in ('valid', 'invalid'):
        put(tmp_path / 'classes' / c / '0.jpg')
    assert load_dataset(str(tmp_path / 'classes'), 'train', size=32, progress=False).classes == ['invalid', 'valid']


def test_channel_stats_are_the_per_channel_mean_and_std_on_the_0_1_scale():
    x = torch.randint(0, 256, (5, 3, 6, 7), dtype=torch.uint8)
    from macrl_hub.data import channel_stats
    mean, std = channel_stats(x, chunk=2)  # chunks of 2 images
    f = x.double() / 255
    assert mean == tuple(round(float(v), 4) for v in f.mean((0, 2, 3)))
    assert std == tuple(round(float(v), 4) for v in f.transpose(0, 1).reshape(3, -1).std(1, unbiased=False))


MEMORY_PROBE = r'''
import io, sys
import numpy as np
from PIL import Image
import torchvision.io  # noqa: F401  (its libraries are not the split's memory)
from macrl_hub.data import decode_images
rng = np.random.default_rng(0)
blobs = []
for i in range(5000):
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(buf, 'PNG' if i % 7 == 0 else 'JPEG')
    blobs.append(buf.getvalue())
def rss():
    return int(open("/proc/self/statm").read().split()[1]) * 4096
def peak_rss():  # this process's own peak: ru_maxrss would count the forking parent's (pytest's) size too
    line = next(l for l in open("/proc/self/status") if l.startswith("VmHWM:"))
    return int(line.split()[1]) * 1024
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # the peak restarts from the current size: what decoding adds is measured alone
base = rss()
imgs, keep = decode_images(blobs, [str(i) for i in range(len(blobs))], size=128)
peak = peak_rss()
print((peak - base) / (imgs.numel() * imgs.element_size()))
'''


@pytest.mark.skipif(not sys.platform.startswith('linux'), reason="reads /proc/self/statm, status and clear_refs")
def test_a_decoded_split_is_in_memory_once():
    """Decoding goes straight into the result tensor: the peak above the start is ~1x the decoded split (it was
    ~3x: a list of arrays, their stack, then a channels-first copy; CIFAR-10 train at 64x64: 1.85 -> 0.70 GB)."""
    import subprocess
    ratio = float(subprocess.run([sys.executable, '-c', MEMORY_PROBE], capture_output=True, text=True,
                                 check=True).stdout.strip().splitlines()[-1])
    assert ratio < 1.8, ratio  # ~1.3 measured (decoding threads hold ~32 MB each); 3.1 before


def test_unreadable_files_leave_no_gaps_and_a_split_that_cannot_fit_is_refused(tmp_path, monkeypatch):
    import io
    from macrl_hub import data as data_mod
    g = torch.Generator().manual_seed(0)
    good = []
    for fmt in ('JPEG', 'PNG', 'JPEG'):
        buf = io.BytesIO()
        Image.fromarray(torch.randint(0, 256, (8, 8, 3), generator=g, dtype=torch.uint8).numpy()).save(buf, fmt)
        good.append(buf.getvalue())
    bad = b'\xff\xd8\xff\xe0 not a jpeg'
    with pytest.warns(UserWarning, match='skipped 2 unreadable'):
        imgs, keep = decode_images([good[0], bad, good[1], good[2], bad], list('abcde'), size=8)
    assert keep == [0, 2, 3]
    assert torch.equal(imgs, decode_images(good, list('xyz'), size=8)[0])
    for c in ('a', 'b'):
        (tmp_path / 'ds' / 'train' / c).mkdir(parents=True)
        for i in range(5):
            (tmp_path / 'ds' / 'train' / c / f'{i}.png').write_bytes(good[1])
    monkeypatch.setattr(data_mod, 'available_memory', lambda: 3 * 32 * 32 * 4 + 5)
    with pytest.raises(DataError, match=r"split 'train' of .*ds: 10 images at 32x32 take 0.0 GiB in memory .* About 4 "
                                        r'images fit at this size'):
        load_dataset(str(tmp_path / 'ds'), 'train', size=32)
    assert len(load_dataset(str(tmp_path / 'ds'), 'train', size=8)) == 10  # 10 x 192 bytes fit


def test_an_archive_of_a_bare_class_tree_is_the_train_split_as_the_folder_is(tmp_path):
    """`tar czf x.tgz -C data/train cat dog` (or `tar c train/`-less trees under one top folder) reads as the folder
    does: its class folders are the train split (it was refused: "split 'train' not found ... none")."""
    rng = np.random.default_rng(0)
    root = tmp_path / 'bare'
    for c in ('cat', 'dog'):
        (root / c).mkdir(parents=True)
        for i in range(3):
            (root / c / f'{i}.png').write_bytes(_png(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)))
    want = load_dataset(str(root), 'train', progress=False)
    for name, arcname in (('classes.tar', None), ('top.tar.gz', 'mine')):
        arc = tmp_path / name
        with tarfile.open(arc, 'w:gz' if name.endswith('gz') else 'w') as tar:
            for c in ('cat', 'dog'):
                tar.add(root / c, arcname=f'{arcname}/{c}' if arcname else c)
        got = load_dataset(str(arc), 'train', progress=False)
        assert got.classes == want.classes == ['cat', 'dog'], name
        assert torch.equal(got.images, want.images) and torch.equal(got.labels, want.labels), name
        with pytest.raises(DataError, match=r"split 'test' not found .*the train split only"):
            load_dataset(str(arc), 'test', progress=False)
    flat = tmp_path / 'flat.tar'
    with tarfile.open(flat, 'w') as tar:
        tar.add(root / 'cat' / '0.png', arcname='0.png')
    with pytest.raises(DataError, match=r'holds 1 images but no class folders'):
        load_dataset(str(flat), 'train', progress=False)


def test_split_names_may_be_spelled_out(tmp_path):
    root = tmp_path / 'ds'
    for split, v in (('train', 0), ('val', 200)):
        (root / split / 'cat').mkdir(parents=True)
        (root / split / 'cat' / '0.png').write_bytes(_png(np.full((8, 8, 3), v, np.uint8)))
    for spelled, short in (('validation', 'val'), ('valid', 'val'), ('training', 'train')):
        assert torch.equal(load_dataset(str(root), spelled, progress=False).images,
                           load_dataset(str(root), short, progress=False).images), spelled


class _FakeCIFAR10:
    """torchvision.datasets.CIFAR10 as the download leaves it: data (N, 32, 32, 3) uint8, targets, classes."""
    calls = []

    def __init__(self, root, train=True, download=False):
        _FakeCIFAR10.calls.append((root, train, download))
        rng = np.random.default_rng(int(train))
        self.data = rng.integers(0, 256, (6, 32, 32, 3), dtype=np.uint8)
        self.targets = [0, 1, 2, 0, 1, 2]
        self.classes = ['airplane', 'automobile', 'bird']


def test_torchvision_cifar_is_read_as_a_folder_of_its_images_would_be(tmp_path, monkeypatch):
    """`--data cifar10` (the main job's source when online): images NCHW as torchvision stores them HWC, 'test' is
    train=False, the download goes to $MACRL_DATA_ROOT, and at another input size the pixels are those of a folder
    holding the same images (resized as a split is decoded; it was refused)."""
    import torchvision
    monkeypatch.setattr(torchvision.datasets, 'CIFAR10', _FakeCIFAR10)
    monkeypatch.setenv('MACRL_DATA_ROOT', str(tmp_path / 'dl'))
    _FakeCIFAR10.calls.clear()
    d = load_dataset('cifar10', 'test')
    assert _FakeCIFAR10.calls == [(str(tmp_path / 'dl'), False, True)]
    ref = _FakeCIFAR10(None, train=False)
    assert d.images.shape == (6, 3, 32, 32) and d.images.dtype == torch.uint8
    assert torch.equal(d.images, torch.from_numpy(ref.data).permute(0, 3, 1, 2))
    assert d.labels.tolist() == ref.targets and d.classes == ref.classes
    assert load_dataset('CIFAR10', 'train').images.shape == (6, 3, 32, 32) and _FakeCIFAR10.calls[-1][1] is True

    for i, (arr, label) in enumerate(zip(ref.data, ref.targets)):  # the same images as a folder of PNGs
        (tmp_path / 'f' / 'test' / ref.classes[label]).mkdir(parents=True, exist_ok=True)
        (tmp_path / 'f' / 'test' / ref.classes[label] / f'{i}.png').write_bytes(_png(arr))
    for size in (48, 24):
        tv, folder = load_dataset('cifar10', 'test', size=size), load_dataset(str(tmp_path / 'f'), 'test', size=size)
        assert tv.images.shape == (6, 3, size, size)
        order = torch.tensor([0, 3, 1, 4, 2, 5])  # the folder lists class by class, file names in order
        assert torch.equal(tv.images[order], folder.images) and torch.equal(tv.labels[order], folder.labels)


def test_torchvision_cifar_offline_names_the_archive_to_pass(monkeypatch):
    import torchvision

    def offline(*a, **k):
        raise RuntimeError('Error downloading cifar-10-python.tar.gz')
    monkeypatch.setattr(torchvision.datasets, 'CIFAR10', offline)
    with pytest.raises(DataError, match=r'could not get cifar10 from torchvision .*offline\? Pass --data '
                                        r'path/to/cifar10-jpeg.tar.xz .* or set MACRL_DATA'):
        load_dataset('cifar10', 'train')


def test_jpegs_decode_without_torchvisions_decoder(tmp_path, monkeypatch):
    """torchvision deprecated its image decoders in 0.29; where a later one has none, JPEGs go through Pillow and
    the split comes out the same within rounding (it failed on the import)."""
    rng = np.random.default_rng(0)
    blobs = [_jpeg(rng.integers(0, 255, (40 + 8 * i, 48, 3), dtype=np.uint8)) for i in range(4)]
    names = [f'{i}.jpg' for i in range(4)]
    fast, kept = decode_images(blobs, names, size=32)
    monkeypatch.setitem(sys.modules, 'torchvision.io', None)  # `from torchvision.io import ...` -> ImportError
    with pytest.raises(ImportError):
        from torchvision.io import decode_jpeg  # noqa: F401
    slow, kept_slow = decode_images(blobs, names, size=32)
    assert kept == kept_slow == [0, 1, 2, 3] and slow.shape == fast.shape == (4, 3, 32, 32)
    assert (slow.int() - fast.int()).abs().max() <= 2
