# -*- coding: utf-8 -*-
# Copyright: volsnap.openstack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Walk and judge the backing chain of a volume file.

The walk reads each layer's header with :mod:`_image_format` (never qemu), follows backing
links only when they stay inside the share, stops at ``max_depth`` and on loops, and checks
the chain against the volume's Cinder ``.info`` file and, when given, against the chain a
libvirt domain declares. Every finding is collected; ``safe`` means no finding of severity
``error``.

Each inspection reads every file once and keeps what it read with its report, so the report can be
judged again against the chain a running domain declares (:func:`judge_declared`) without reading
the chain a second time.
"""

from __future__ import annotations

import copy
import errno
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

from ansible_collections.volsnap.openstack.plugins.module_utils._nfs.image_format import (
    ERROR,
    WARNING,
    Finding,
    ImageInfo,
    inspect_image,
)
from ansible_collections.volsnap.openstack.plugins.module_utils._nfs.share import (
    DirListing,
    InfoFileError,
    SnapshotInfo,
    backing_name_allowed,
    info_path_for,
    is_snapshot_like,
    load_info,
    lstat_regular,
    own_file_kind,
    qemu_protocol,
    split_volume_filename,
)

DEFAULT_MAX_DEPTH = 100

# qemu's format names for the formats we detect, and the reverse aliases.
_QEMU_NAMES = {'vhd': 'vpc', 'iso': 'raw'}
# qemu's driver names of the image formats detected here: the only backing formats a header may declare.
QEMU_FORMAT_DRIVERS = ('raw', 'qcow2', 'qed', 'vmdk', 'vpc', 'vhdx', 'vdi', 'luks')
_ALIASES = {'vpc': 'vhd', 'file': 'raw', 'host_device': 'raw'}


def qemu_format(fmt: str) -> str:
    """The name qemu uses for a format this collection detected."""
    return _QEMU_NAMES.get(fmt, fmt)


def normalize_format(fmt: Optional[str]) -> Optional[str]:
    """Map a qemu or libvirt format name to this collection's name."""
    if fmt is None:
        return None
    return _ALIASES.get(fmt, fmt)


def formats_agree(declared: str, detected: str) -> bool:
    declared = normalize_format(declared) or ''
    return declared == detected or (declared == 'raw' and detected == 'iso')


def within(path: str, directory: str) -> bool:
    """True when the resolved ``path`` lies inside the resolved ``directory``."""
    real = os.path.realpath(path)
    return real == directory or real.startswith(directory.rstrip('/') + '/')


@dataclass
class DeclaredChain:
    """A chain as a hypervisor declares it: top first, (path, format) per layer.

    ``complete`` is false when the declaration stops before the base (old libvirt without
    ``<backingStore>``): layers below the last declared one are then only read from headers.
    """

    layers: List[Tuple[str, Optional[str]]]
    complete: bool = True


@dataclass
class Layer:
    image: ImageInfo
    declared_format: Optional[str] = None
    backing_path: Optional[str] = None
    snapshot_id: Optional[str] = None
    data_of_snapshot_id: Optional[str] = None
    expected_format: Optional[str] = None
    format_source: Optional[str] = None

    @property
    def trusted_format(self) -> str:
        """The format to hand to qemu for this layer: the trusted one (see :class:`FormatTrust`).

        Only the content's format when no trusted source names one (a file outside Cinder's naming that
        nothing declares); on a layer without a ``format_mismatch`` both agree.
        """
        return self.expected_format or self.image.format

    def as_dict(self) -> Dict[str, object]:
        img = self.image
        return {
            'path': img.path,
            'filename': img.filename,
            'format': img.format,
            'declared_format': self.declared_format,
            'virtual_size': img.virtual_size,
            'actual_size': img.actual_size,
            'file_size': img.file_size,
            'cluster_size': img.cluster_size,
            'qcow2_version': img.qcow2_version,
            'backing_file': img.backing_file,
            'backing_path': self.backing_path,
            'backing_format': img.backing_format,
            'encrypted': img.encrypted,
            'encryption_format': img.encryption_format,
            'dirty': img.dirty,
            'corrupt': img.corrupt,
            'data_file': img.data_file,
            'extended_l2': img.extended_l2,
            'compression_type': img.compression_type,
            'incompatible_features': list(img.incompatible_features),
            'internal_snapshots': img.internal_snapshots,
            'snapshot_id': self.snapshot_id,
            'data_of_snapshot_id': self.data_of_snapshot_id,
            'expected_format': self.expected_format,
            'format_source': self.format_source,
        }


@dataclass
class ChainReport:
    path: str
    share: str
    layers: List[Layer] = field(default_factory=list)
    problems: List[Finding] = field(default_factory=list)
    volume_name: Optional[str] = None
    info_file: Optional[str] = None
    info: Optional[SnapshotInfo] = None
    followed_info: bool = False
    # The names of the volume's directory this inspection read (the same read serves the plan's checks).
    listing: Optional[DirListing] = field(default=None, repr=False, compare=False)
    # The same inspection judged against another declared chain, from what this one read (see judge_declared).
    rejudge: Optional[Callable[[Optional[DeclaredChain]], ChainReport]] = field(
        default=None, init=False, repr=False, compare=False)

    @property
    def safe(self) -> bool:
        return not any(p.severity == ERROR for p in self.problems)

    @property
    def errors(self) -> List[Finding]:
        return [p for p in self.problems if p.severity == ERROR]

    @property
    def active(self) -> Optional[str]:
        return self.layers[0].image.filename if self.layers else None

    @property
    def file_format(self) -> Dict[str, str]:
        return dict((layer.image.filename, layer.image.format) for layer in self.layers)

    def problem(self, code: str, message: str, severity: str = ERROR, filename: Optional[str] = None) -> None:
        self.problems.append(Finding(code, message, severity, filename))

    def summary(self) -> str:
        return '; '.join('%s: %s' % (p.code, p.message) for p in self.errors)

    def as_dict(self) -> Dict[str, object]:
        return {
            'path': self.path,
            'share': self.share,
            'active': self.active,
            'active_path': self.layers[0].image.path if self.layers else None,
            'volume_name': self.volume_name,
            'info_file': self.info_file,
            'snapshots': dict(self.info.snapshots) if self.info else {},
            'depth': len(self.layers),
            'chain': [layer.as_dict() for layer in self.layers],
            'file_format': self.file_format,
            'safe': self.safe,
            'problems': [p.as_dict() for p in self.problems],
        }


VOLUME_FORMATS = ('raw', 'qcow2')
DEFAULT_VOLUME_FORMAT = 'raw'
_SOURCE_DEFAULT = 'the default for a Cinder volume file (volume_format not set)'
_SOURCE_VOLUME_FORMAT = 'volume_format'
_SOURCE_SNAPSHOT_NAME = 'its name (Cinder and Nova create snapshot files only as qcow2 overlays)'
_SOURCE_LIBVIRT = "libvirt's <driver type> for it (the running domain's XML)"
_SOURCE_FORMAT_OPTION = 'the format option'


@dataclass
class FormatTrust:
    """Where the format of each layer comes from: trusted sources, never the layer's own content.

    The claims on a layer, each made by a source that a guest cannot write:

    * ``top_format`` (qcow2_chain_info's ``format``) for the top layer;
    * ``libvirt``, by depth: the ``<driver type>`` of each layer the running domain's XML declares (Nova's
      knowledge, from the connection info Cinder gave it);
    * below an overlay, the backing format its header extension declares (written by Cinder, Nova or this
      collection when the overlay was created, from the format of the file it was created on);
    * ``volume_format`` (the format Cinder knows for the volume, given by the operator) for the base volume
      file ``volume-<id>``, at the top or below an overlay.

    All claims on a layer must agree. Without any, a Cinder file's name decides: a snapshot file
    ``volume-<id>.<snapshot uuid>`` is qcow2, the base ``volume-<id>`` is raw (Cinder's default,
    ``nfs_qcow2_volumes = false``). Only files outside Cinder's naming that nothing declares get the format
    of their content. A layer whose content has another format is a ``format_mismatch`` (OSSA 2014-033).
    """

    volume_format: Optional[str] = None
    top_format: Optional[str] = None
    libvirt: Tuple[Optional[str], ...] = ()
    volume_name: Optional[str] = None

    def expect(self, depth: int, filename: str, declared: Optional[str] = None,
               declared_by: Optional[str] = None) -> Tuple[Optional[str], Optional[str], Optional[str]]:
        """``(format, source, conflict)`` for layer ``filename`` at ``depth`` (0 is the top).

        ``declared`` is the backing format that the overlay ``declared_by`` (the layer above) declares.
        ``conflict`` says which trusted sources disagree (then ``format`` is the first one's).
        """
        kind = own_file_kind(filename, self.volume_name) if self.volume_name else None
        claims: List[Tuple[str, str]] = []
        if depth == 0 and self.top_format:
            claims.append((normalize_format(self.top_format) or '', _SOURCE_FORMAT_OPTION))
        if depth < len(self.libvirt) and self.libvirt[depth]:
            claims.append((normalize_format(self.libvirt[depth]) or '', _SOURCE_LIBVIRT))
        if declared_by is not None and declared:
            claims.append((normalize_format(declared) or '', 'the backing format %s declares' % declared_by))
        if kind == 'volume' and self.volume_format:
            claims.append((self.volume_format, _SOURCE_VOLUME_FORMAT))
        if claims:
            fmt, source = claims[0]
            for other, other_source in claims[1:]:
                if qemu_format(other) != qemu_format(fmt):
                    return fmt, source, '%s says %s but %s says %s' % (source, fmt, other_source, other)
            return fmt, source, None
        if kind == 'snapshot':
            return 'qcow2', _SOURCE_SNAPSHOT_NAME, None
        if kind == 'volume':
            return DEFAULT_VOLUME_FORMAT, _SOURCE_DEFAULT, None
        return None, None, None


def _mismatch_advice(expected: str, source: Optional[str], content: Optional[str]) -> str:
    """What the operator should do about a format_mismatch (``expected`` set by ``source``, ``content`` found)."""
    if source == _SOURCE_DEFAULT and content == 'qcow2':
        return ('if the Cinder backend creates qcow2 volumes (nfs_qcow2_volumes = true; Cinder records the format '
                'in the volume\'s admin metadata "format", or "base_format" once it has snapshots) pass '
                'volume_format: qcow2; otherwise a guest wrote an image header into this raw volume (OSSA 2014-033) '
                'and it must never be read as an image')
    if source == _SOURCE_VOLUME_FORMAT:
        return ('pass the format Cinder records for the volume as volume_format (admin metadata "base_format", or '
                '"format" while it has no snapshot); if that is %s, a guest wrote an image header into this volume '
                '(OSSA 2014-033) and it must never be read as %s' % (expected, content))
    if source is not None and source.startswith('the backing format '):
        return ('the overlay was created over a %s file: a guest wrote this header into it, or the overlay\'s '
                'creator probed the format (OSSA 2014-033); pass volume_format to check the base volume against '
                'Cinder\'s format' % expected)
    return 'a guest may have written an image header into it (OSSA 2014-033)'


class _Reads(object):
    """The share as one inspection read it: each read is made once and its result (or its error) kept.

    Judging the same inspection again (against a declared chain) goes through the same object, so it sees
    exactly the files the first judgement saw and reads only what that one did not need.
    """

    def __init__(self) -> None:
        self._seen: Dict[Tuple[str, str], Tuple[Any, Optional[Exception]]] = {}

    def _once(self, kind: str, path: str, read: Callable[[str], Any]) -> Any:
        key = (kind, path)
        if key not in self._seen:
            try:
                self._seen[key] = (read(path), None)
            except (OSError, ValueError) as exc:  # IOError is OSError; InfoFileError is a ValueError
                self._seen[key] = (None, exc)
        value, error = self._seen[key]
        if error is not None:
            raise error
        return value

    def seed(self, kind: str, path: str, value: Any) -> None:
        """Record a read the caller already made (as if this object had made it)."""
        self._seen[(kind, path)] = (value, None)

    def realpath(self, path: str) -> str:
        return str(self._once('realpath', path, os.path.realpath))

    def lexists(self, path: str) -> bool:
        return bool(self._once('lexists', path, os.path.lexists))

    def listing(self, directory: str) -> DirListing:
        listing: DirListing = self._once('listdir', directory, DirListing.read)
        return listing

    def lstat_regular(self, path: str) -> None:
        self._once('lstat_regular', path, lstat_regular)

    def load_info(self, path: str) -> Optional[SnapshotInfo]:
        info: Optional[SnapshotInfo] = self._once('info', path, load_info)
        return info

    def image(self, path: str) -> ImageInfo:
        # A copy: the walk sets the path it reached the layer by on its own ImageInfo.
        image: ImageInfo = copy.copy(self._once('image', path, inspect_image))
        return image


def inspect_chain(path: str, share: Optional[str] = None, max_depth: int = DEFAULT_MAX_DEPTH,
                  expected_format: Optional[str] = None, follow_info: bool = True,
                  declared: Optional[DeclaredChain] = None, volume_format: Optional[str] = None,
                  listing: Optional[Union[List[str], DirListing]] = None) -> ChainReport:
    """Inspect the chain that starts at ``path`` (or at the active file named by the volume's .info).

    ``share`` bounds where backing files may live (default: the directory of ``path``).
    ``expected_format`` is the format the caller knows the top file has (qcow2_chain_info's ``format``);
    ``volume_format`` the format Cinder knows for the base volume file; ``declared`` the chain a running
    domain declares. Each layer's format comes from these and the overlays' declarations, never from its
    content alone (:class:`FormatTrust`); content with another format is the OSSA 2014-033 case.
    Raises OSError only when ``path`` itself cannot be read. ``listing``: the names of the volume's directory when
    the caller has just read them (a share audit: one ``listdir`` for every volume, not one per volume; a request
    holding the volume's lock: one listing read after it took the lock for every check of that phase).
    """
    reads = _Reads()
    if listing is not None:
        reads.seed('listdir', os.path.dirname(os.path.abspath(path)),
                   listing if isinstance(listing, DirListing) else DirListing(listing))
    return _inspect(reads, os.path.abspath(path), share, max_depth, expected_format, follow_info, declared,
                    volume_format)


def judge_declared(report: ChainReport, declared: Optional[DeclaredChain]) -> ChainReport:
    """The report ``inspect_chain(..., declared=declared)`` gives for the call that made ``report``.

    Judged from the files as that inspection read them, none read again: the formats libvirt declares join
    the trusted claims of each layer (:class:`FormatTrust`), the walk stops where they disagree with the
    content, and the chain is compared with the declared one, exactly as :func:`inspect_chain` does. Only
    files that inspection did not reach are read (a layer below one whose format only libvirt's declaration
    makes trusted). ``report`` itself is not changed.
    """
    if report.rejudge is None:
        raise ValueError('the report was not made by inspect_chain')
    return report.rejudge(declared)


def _inspect(reads: _Reads, path: str, share: Optional[str], max_depth: int, expected_format: Optional[str],
             follow_info: bool, declared: Optional[DeclaredChain], volume_format: Optional[str]) -> ChainReport:
    share_real = reads.realpath(share) if share else os.path.dirname(reads.realpath(path))
    report = ChainReport(path=path, share=share_real)
    report.rejudge = lambda other: _inspect(reads, path, share, max_depth, expected_format, follow_info, other,
                                            volume_format)
    directory = os.path.dirname(path)
    start = path

    parts = split_volume_filename(os.path.basename(path))
    if parts is not None:
        report.volume_name = parts[0]
        report.info_file = info_path_for(os.path.join(directory, parts[0]))
        try:
            report.info = reads.load_info(report.info_file)
        except InfoFileError as exc:
            report.problem('info_invalid', '%s %s' % (report.info_file, exc), filename=os.path.basename(report.info_file))
        except (IOError, OSError) as exc:
            report.problem('info_invalid', 'cannot read %s: %s' % (report.info_file, exc),
                           filename=os.path.basename(report.info_file))
        if follow_info and report.info is not None and parts[2] is None:
            # Only an "active" entry naming a regular file of this very volume is followed; any other (another
            # volume's file, the .info itself, a lock, a symlink, a missing file) is reported by the .info checks,
            # and the walk then starts at path.
            if _own_regular_file(reads, directory, report.info.active, report.volume_name):
                start = os.path.join(directory, report.info.active)
                report.followed_info = start != path

    trust = FormatTrust(volume_format=volume_format, top_format=expected_format, volume_name=report.volume_name,
                        libvirt=tuple(fmt for _path, fmt in declared.layers) if declared is not None else ())
    if declared is not None and declared.layers and expected_format is None:
        expected_format = declared.layers[0][1]
    _walk(reads, report, start, expected_format, max_depth, trust)
    if declared is not None:
        _compare_declared(reads, report, declared)
    if report.volume_name is not None:
        _check_info(reads, report, directory)
    return report


class _Resolver(object):
    """Physical paths of layers, resolving each directory once.

    A simple backing name (no ``/``) is joined to its directory's resolved path; a final component
    that is a symlink is caught by ``O_NOFOLLOW`` when the file is opened, and then resolved fully.
    Names with directory parts are always resolved fully (``sub/..`` must follow ``sub`` physically,
    as the kernel does when qemu opens the file).
    """

    def __init__(self, reads: _Reads, share: str) -> None:
        self.reads = reads
        self.share = share
        self.prefix = share.rstrip('/') + '/'
        self._dirs: Dict[str, str] = {}

    def resolve(self, directory: str, name: str) -> str:
        if '/' in name or name in ('.', '..'):
            return self.reads.realpath(os.path.join(directory, name))
        real_dir = self._dirs.get(directory)
        if real_dir is None:
            real_dir = self._dirs[directory] = self.reads.realpath(directory)
        return os.path.join(real_dir, name)

    def inside(self, real: str) -> bool:
        return real == self.share or real.startswith(self.prefix)


def _walk(reads: _Reads, report: ChainReport, start: str, expected_format: Optional[str], max_depth: int,
          trust: Optional[FormatTrust] = None) -> None:
    trust = trust or FormatTrust(top_format=expected_format)
    resolver = _Resolver(reads, report.share)
    current: Optional[str] = start
    real = reads.realpath(start)
    declared_format = normalize_format(expected_format)
    visited = set()
    fully_resolved = True
    while current is not None:
        name = os.path.basename(current)
        is_top = not report.layers
        if len(report.layers) >= max_depth:
            report.problem('chain_too_deep', 'the chain is deeper than max_depth=%d; stopped at %s'
                           % (max_depth, name), filename=name)
            return
        if not resolver.inside(real):
            if is_top:
                report.problem('outside_share', '%s resolves to %s, outside the share %s'
                               % (current, real, report.share), filename=name)
            else:
                report.problem('backing_outside_share', '%s names backing file %s, which resolves to %s outside the '
                               'share %s' % (report.layers[-1].image.filename, report.layers[-1].image.backing_file,
                                             real, report.share), filename=report.layers[-1].image.filename)
            return
        try:
            image = reads.image(real)
        except (IOError, OSError) as exc:
            if exc.errno == errno.ELOOP and not fully_resolved:
                real = reads.realpath(real)  # the last component is a symlink: judge its target
                fully_resolved = True
                continue
            if is_top:
                raise
            code = 'missing_backing_file' if not reads.lexists(current) else 'unreadable_backing_file'
            report.problem(code, 'backing file %s of %s cannot be read: %s'
                           % (current, report.layers[-1].image.filename, exc.strerror or exc), filename=name)
            return
        if image.file_id in visited:
            report.problem('backing_loop', 'the chain loops back to %s' % name, filename=name)
            return
        visited.add(image.file_id)
        image.path = current
        above = None if is_top else report.layers[-1].image.filename
        layer = Layer(image=image, declared_format=declared_format)
        layer.expected_format, layer.format_source, conflict = trust.expect(len(report.layers), name,
                                                                            declared_format, above)
        report.layers.append(layer)
        report.problems.extend(image.findings)

        expected = layer.expected_format
        if conflict is not None:
            report.problem('format_mismatch', 'the trusted sources disagree on the format of %s (its content is %s): '
                           '%s. It is not followed. Check the format Cinder records for the volume (admin metadata '
                           '"base_format", or "format" while it has no snapshot) and pass it as volume_format; if it '
                           'is right, a tool that probed the format wrote or declared this file after a guest wrote '
                           'an image header into the volume (OSSA 2014-033)' % (name, image.format, conflict),
                           filename=name)
            return
        if expected is not None and not formats_agree(expected, image.format):
            report.problem('format_mismatch', '%s must be %s (set by %s) but its content is %s; it is not followed: %s'
                           % (name, expected, layer.format_source, image.format,
                              _mismatch_advice(expected, layer.format_source, image.format)), filename=name)
            return
        if image.data_file is not None and qemu_protocol(image.data_file) is not None:
            report.problem('data_file_protocol', '%s names its data file %s, which qemu opens through its %s: protocol '
                           '(never as a file of the share)' % (name, image.data_file, qemu_protocol(image.data_file)),
                           filename=name)
        if image.format != 'qcow2' or not image.backing_file:
            return
        if any(f.code in ('invalid_header', 'invalid_backing_name') for f in image.findings):
            return
        backing = image.backing_file
        if qemu_protocol(backing) is not None:
            # qemu's path_has_protocol: a ':' before the first '/' (json:{...}, file:, nbd:, http:...) picks a
            # protocol driver, never a file of the share, whatever file of that literal name exists here.
            report.problem('backing_protocol', '%s names backing file %s, which qemu opens through its %s: protocol '
                           '(a json: name can name any file or network server); it is not followed'
                           % (name, backing, qemu_protocol(backing)), filename=name)
            return
        if image.backing_format is not None and image.backing_format not in QEMU_FORMAT_DRIVERS:
            # qemu takes the backing format as a block driver name: a protocol driver (file, host_device, nbd...)
            # opens the file as something else than an image format, an unknown name fails ("Unknown driver").
            report.problem('backing_format_not_allowed', '%s declares backing format %r, which is not one of the '
                           'image formats qemu opens here (%s); it is not followed'
                           % (name, image.backing_format, ', '.join(QEMU_FORMAT_DRIVERS)), filename=name)
            return
        directory = os.path.dirname(current)
        real = resolver.resolve(directory, backing)
        fully_resolved = '/' in backing or backing in ('.', '..')
        layer.backing_path = os.path.normpath(os.path.join(directory, backing))
        if not resolver.inside(real):
            continue  # reported at the top of the loop, with the resolved path
        if os.path.isabs(backing):
            report.problem('absolute_backing_path', '%s refers to its backing file by the absolute path %s; '
                           'Cinder and Nova write relative names' % (name, backing), WARNING, name)
        if report.volume_name and not backing_name_allowed(backing, report.volume_name, report.share):
            report.problem('backing_name_not_allowed', '%s names backing file %s, which Cinder refuses (it must be '
                           '%s or %s.<snapshot id>)' % (name, backing, report.volume_name, report.volume_name),
                           filename=name)
        if image.backing_format is None:
            report.problem('backing_format_unspecified', '%s does not declare the format of its backing file %s, so '
                           'qemu would probe it' % (name, backing), WARNING, name)
        declared_format = normalize_format(image.backing_format)
        current = layer.backing_path


def _compare_declared(reads: _Reads, report: ChainReport, declared: DeclaredChain) -> None:
    for index, (path, fmt) in enumerate(declared.layers):
        name = os.path.basename(path)
        if index >= len(report.layers):
            if report.safe:
                report.problem('libvirt_chain_mismatch', 'libvirt lists %s at depth %d but the image headers end '
                               'before it' % (path, index), filename=name)
            return
        layer = report.layers[index]
        if reads.realpath(path) != reads.realpath(layer.image.path):
            report.problem('libvirt_chain_mismatch', 'libvirt lists %s at depth %d but the image headers lead to %s'
                           % (path, index, layer.image.path), filename=name)
            return
        if fmt is not None and not formats_agree(fmt, layer.image.format) and not any(
                p.code == 'format_mismatch' and p.filename == name for p in report.problems):
            report.problem('format_mismatch', 'libvirt opens %s as %s but its content is %s'
                           % (name, fmt, layer.image.format), filename=name)
    if declared.complete and len(report.layers) > len(declared.layers):
        extra = report.layers[len(declared.layers)].image.filename
        report.problem('libvirt_chain_mismatch', 'the image headers continue to %s below the chain libvirt declares'
                       % extra, filename=extra)


def _own_regular_file(reads: _Reads, directory: str, filename: str, volume_name: Optional[str]) -> bool:
    """True when ``filename`` is a file of ``volume_name`` (its name says so) and a regular file (not a link)."""
    if not volume_name or own_file_kind(filename, volume_name) is None:
        return False
    try:
        reads.lstat_regular(os.path.join(directory, filename))
    except OSError:
        return False
    return True


def _check_info(reads: _Reads, report: ChainReport, directory: str) -> None:
    volume_name = report.volume_name or ''
    info = report.info
    chain_files = [layer.image.filename for layer in report.layers]
    chain_set = set(chain_files)
    try:
        listing = reads.listing(directory)
    except OSError:
        listing = DirListing(())
    else:
        report.listing = listing
    present = listing
    own_prefix = volume_name + '.'
    snapshot_like = set(entry for entry in listing.of_volume(volume_name)
                        if entry.startswith(own_prefix) and is_snapshot_like(entry, volume_name))

    if info is not None:
        # Every entry names a regular file of this volume: never another volume's file, the .info itself, a lock,
        # a journal, a symlink (even to a file of this volume).
        for problem in info.foreign_entries(volume_name):
            report.problem('info_foreign_entry', 'the .info file %s: %s' % (report.info_file, problem),
                           filename=os.path.basename(report.info_file or ''))
    # The files of the volume that are used (the .info entries, the layers of the chain that carry the volume's
    # names, the volume file itself) must be regular files: a link would make another file (another volume's, or
    # one outside the share) this volume's data.
    used = dict((filename, 'the .info file names it for "%s"' % key)
                for key, filename in sorted((info.as_dict() if info is not None else {}).items()))
    for layer in report.layers:
        used.setdefault(layer.image.filename, 'it is in the chain')
    used.setdefault(volume_name, 'it is the volume file')
    for filename, why in sorted(used.items()):
        if own_file_kind(filename, volume_name) is None or filename not in present:
            continue  # reported as info_foreign_entry, or as info_missing_file below
        try:
            reads.lstat_regular(os.path.join(directory, filename))
        except OSError as exc:
            report.problem('info_entry_not_regular', '%s %s (%s); only regular files of the volume are used'
                           % (filename, getattr(exc, 'strerror', None) or exc, why), filename=filename)

    if info is None:
        stray = [f for f in chain_files if f != volume_name and f in snapshot_like]
        if stray and report.info_file and not any(p.code == 'info_invalid' for p in report.problems):
            report.problem('info_missing', 'the chain holds snapshot files (%s) but %s does not exist'
                           % (', '.join(stray), report.info_file), filename=os.path.basename(report.info_file))
        return

    named = set(info.snapshots.values()) | {info.active}
    for snap_id, filename in sorted(info.snapshots.items()):
        if filename not in present:
            report.problem('info_missing_file', 'the .info file names %s for snapshot %s but the file does not exist'
                           % (filename, snap_id), filename=filename)
        elif report.active == info.active and filename not in chain_set:
            report.problem('info_file_not_in_chain', 'snapshot %s file %s is not in the backing chain of %s'
                           % (snap_id, filename, info.active), filename=filename)
    if info.active not in present:
        report.problem('info_missing_file', 'the .info file names %s as active but it does not exist' % info.active,
                       filename=info.active)
    # The bottom of a chain may be a former snapshot file that no snapshot names: an online delete that
    # flattens (Nova's blockRebase onto nothing) deletes volume-<id> and leaves that file as the base.
    bottom = chain_files[-1] if report.layers and not report.layers[-1].image.backing_file else None
    for filename in chain_files:
        if filename in snapshot_like and filename not in named and filename != bottom:
            report.problem('snapshot_file_not_in_info', '%s is in the chain but the .info file does not name it '
                           '(an interrupted snapshot operation?)' % filename, filename=filename)
    for filename in sorted(snapshot_like - named - chain_set):
        report.problem('orphan_snapshot_file', '%s looks like a snapshot file of %s but neither the .info file nor '
                       'the chain uses it' % (filename, volume_name), WARNING, filename)

    owners = dict((name, snap_id) for snap_id, name in info.snapshots.items())
    previous: Optional[str] = None
    for layer in report.layers:
        layer.snapshot_id = owners.get(layer.image.filename)
        layer.data_of_snapshot_id = previous
        previous = layer.snapshot_id
