# -*- coding: utf-8 -*-
# Copyright: volsnap.openstack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""volume_clone: a new volume file from a snapshot of a Cinder RemoteFS (NFS) volume.

As Cinder's NFS driver does for "create volume from snapshot": the snapshot's point-in-time data
is the *backing chain* of the file the ``.info`` file names for the snapshot; that chain is
converted (flattened) with ``qemu-img convert`` into a new raw or qcow2 file.

The clone is planned then executed on the shared step model (:mod:`.._base.steps`): :data:`CLONE`
is its one table of actions, :func:`plan_clone` builds a :class:`ClonePlan` of steps from image
headers and the destination's state only (what check mode returns), :func:`execute_clone` runs them
through :func:`clone_handlers`, what the run learns (the descriptor, inode, verified size) going
into its :class:`RunContext`. :func:`clone_volume` ties both together under the volume's lock.

Crash safety: the data is written to a hidden temporary file beside the destination
(``.<dest name>.volsnap-tmp``), synced, its origin is recorded in the sidecar
``.<dest name>.volsnap-clone`` (written atomically), and only then the temporary file is linked to
the destination name, never replacing an existing file. A crash leaves either no destination (a
stale temporary file, removed and redone by the next run; a sidecar without its file is ignored) or
a complete destination with its sidecar.
"""

from __future__ import annotations

import errno
import functools
import json
import os
import shlex
import stat
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Tuple

from ansible_collections.volsnap.openstack.plugins.module_utils._base.atomic import (
    FileAttributes,
    fsync_dir,
    is_temporary_name,
    remove_if_exists,
)
from ansible_collections.volsnap.openstack.plugins.module_utils._base.errors import VolsnapError
from ansible_collections.volsnap.openstack.plugins.module_utils._base.ids import is_file_id
from ansible_collections.volsnap.openstack.plugins.module_utils._base.steps import (
    Actions,
    Executor,
    Handler,
    RunContext,
    Step,
    describe_steps,
)
from ansible_collections.volsnap.openstack.plugins.module_utils._nfs.chain import (
    DEFAULT_MAX_DEPTH,
    ChainReport,
    inspect_chain,
)
from ansible_collections.volsnap.openstack.plugins.module_utils._nfs.image_format import inspect_image
from ansible_collections.volsnap.openstack.plugins.module_utils._nfs.qemu_img import QemuImg, Runner, argv, convert_args
from ansible_collections.volsnap.openstack.plugins.module_utils._nfs.share import (
    TEMP_SUFFIX,
    ShareFileError,
    create_share_file,
    descriptor_path,
    lstat_regular,
    open_regular,
    os_error_file,
    os_error_text,
    publish_descriptor,
    remove_if_same,
    share_file_attributes,
    split_volume_filename,
    temporary_path,
    write_atomic,
)
from ansible_collections.volsnap.openstack.plugins.module_utils._nfs.volume import ShareVolume

OUTPUT_FORMATS = ('raw', 'qcow2')
SIDECAR_SUFFIX = '.volsnap-clone'
SIDECAR_VERSION = 1


def sidecar_path_for(dest: str) -> str:
    return os.path.join(os.path.dirname(dest), '.%s%s' % (os.path.basename(dest), SIDECAR_SUFFIX))


def check_id(kind: str, value: str) -> None:
    if not is_file_id(value):
        raise VolsnapError('%s %r is not a Cinder id (a UUID such as 9c3f6a2e-1d4b-4c5e-8f7a-6b5c4d3e2f1a); file '
                           'names are built from it, so nothing else is accepted' % (kind, value))


def resolve_volume(volume_path: Optional[str], share: Optional[str], volume_id: Optional[str]) -> Tuple[str, str, str]:
    """Return (base volume file path, share directory, volume id) from the module's options."""
    if volume_path:
        volume = ShareVolume.from_path(volume_path, 'base volume file itself, named volume-<volume id> (not a '
                                                    'snapshot or .info file)')
        share = os.path.abspath(share) if share else volume.directory
    else:
        if not share or not volume_id:
            raise VolsnapError('give either volume_path, or share and volume_id')
        check_id('volume_id', volume_id)
        share = os.path.abspath(share)
        volume = ShareVolume.in_share(share, volume_id)
    return volume.path, share, volume.volume_id


# ---------------------------------------------------------------------------------------------
# The clone's actions, defined once: name -> how a step of it reads
# ---------------------------------------------------------------------------------------------

def _describe_keep(a: Mapping[str, Any]) -> str:
    return ('%s already holds snapshot %s of volume %s as %s (recorded in %s): nothing to do'
            % (a['dest'], a['snapshot_id'], a['volume_id'], a['format'], sidecar_path_for(a['dest'])))


def _describe_convert(a: Mapping[str, Any]) -> str:
    return ('convert the backing chain of snapshot %s (%s, %s, %d bytes) to %s: %s'
            % (a['snapshot_id'], a['source'], a['source_format'], a['virtual_size'] or 0, a['format'],
               ' '.join(shlex.quote(arg) for arg in a['command'])))


def _describe_publish(a: Mapping[str, Any]) -> str:
    return ('move %s to %s (never replacing an existing file) and fsync %s'
            % (temporary_path(a['dest']), a['dest'], os.path.dirname(a['dest'])))


CLONE = Actions('volume_clone', {
    # dest is already this clone (its sidecar says so); a run removes a second link to it left at the temporary name
    'keep': _describe_keep,
    # the request holds the lock around planning and execution (clone_volume); the plan says so
    'lock': lambda a: 'hold the volume lock nfs-%s for the whole operation' % a['volume_id'],
    'remove_stale_tmp': lambda a: ('remove the stale temporary file %s left by an interrupted run'
                                   % temporary_path(a['dest'])),
    'create_tmp': lambda a: ('create %s with the mode and owner of %s before any data is written'
                             % (temporary_path(a['dest']), a['like'])),
    'convert': _describe_convert,
    'fsync': lambda a: 'fsync %s' % temporary_path(a['dest']),
    'record': lambda a: 'record the clone in %s' % sidecar_path_for(a['dest']),
    'publish': _describe_publish,
})


@dataclass(frozen=True)
class ClonePlan:
    """What a clone does (``steps`` of :data:`CLONE`), or found already done (one ``keep`` step)."""

    volume_id: str
    snapshot_id: str
    dest: str
    format: str
    steps: Tuple[Step, ...]
    source: Optional[str] = None
    source_format: Optional[str] = None
    virtual_size: Optional[int] = None
    volume_path: Optional[str] = None

    @property
    def tmp(self) -> str:
        return temporary_path(self.dest)

    @property
    def sidecar(self) -> str:
        return sidecar_path_for(self.dest)

    @property
    def noop(self) -> bool:
        return [step.action for step in self.steps] == ['keep']

    @property
    def command(self) -> List[str]:
        """The qemu-img argv of the ``convert`` step (the temporary file as output); empty without one."""
        for step in self.steps:
            if step.action == 'convert':
                return list(step.args['command'])
        return []

    def describe(self) -> List[str]:
        return describe_steps(self.steps)

    def result(self) -> Dict[str, Any]:
        return {
            'changed': not self.noop,
            'dest': self.dest,
            'format': self.format,
            'snapshot_id': self.snapshot_id,
            'volume_id': self.volume_id,
            'source': self.source,
            'virtual_size': self.virtual_size,
            'command': self.command,
            'plan': self.describe(),
        }


def read_sidecar(dest: str) -> Optional[Dict[str, Any]]:
    """The sidecar of ``dest`` as a dict, or None when it is absent or unreadable."""
    try:
        # never through a symlink planted at the sidecar's name
        with os.fdopen(open_regular(sidecar_path_for(dest)), 'rb') as handle:
            raw = handle.read(65537)
    except (IOError, OSError):
        return None
    if len(raw) > 65536:
        return None
    try:
        data = json.loads(raw.decode('utf-8'))
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def check_dest(dest: str, volume_id: str, snapshot_id: str, fmt: str) -> Optional[Dict[str, Any]]:
    """Judge the destination: None when it does not exist, the sidecar record when it is already this clone.

    Raises VolsnapError when the destination's directory is missing or when it exists as anything
    else (it is never overwritten).
    """
    directory = os.path.dirname(dest)
    if not os.path.isdir(directory):
        raise VolsnapError('the directory of dest %s does not exist: create it first' % dest)
    try:
        dest_stat = os.lstat(dest)
    except OSError as exc:
        if exc.errno == errno.ENOENT:
            return None
        raise VolsnapError('cannot read dest %s: %s' % (dest, exc.strerror or exc))
    record = read_sidecar(dest)
    wanted = {'volume_id': volume_id, 'snapshot_id': snapshot_id, 'format': fmt}
    if record is None:
        raise VolsnapError('dest %s already exists and was not made by volume_clone (no %s); it is never overwritten: '
                           'choose another dest or remove it' % (dest, sidecar_path_for(dest)))
    found = dict((key, record.get(key)) for key in wanted)
    if found != wanted:
        raise VolsnapError('dest %s already exists and holds %s of volume %s as %s, not snapshot %s of volume %s as %s; '
                           'it is never overwritten: choose another dest or remove it'
                           % (dest, found['snapshot_id'], found['volume_id'], found['format'], snapshot_id, volume_id,
                              fmt), existing=record)
    if not stat.S_ISREG(dest_stat.st_mode) or (record.get('inode') is not None
                                               and record.get('inode') != dest_stat.st_ino):
        raise VolsnapError('dest %s exists but is not the file volume_clone made (it was replaced since); it is never '
                           'overwritten: remove it and %s to clone again' % (dest, sidecar_path_for(dest)),
                           existing=record)
    return record


def plan_clone(report: ChainReport, snapshot_id: str, dest: str, fmt: str = 'raw',
               qemu_img: str = 'qemu-img') -> ClonePlan:
    """Plan the clone of ``snapshot_id`` from the inspected chain of its volume (no file is changed)."""
    check_id('snapshot_id', snapshot_id)
    if fmt not in OUTPUT_FORMATS:
        raise VolsnapError('format must be one of %s, got %r' % (', '.join(OUTPUT_FORMATS), fmt))
    parts = split_volume_filename(os.path.basename(report.path))
    if report.volume_name is None or parts is None:
        raise VolsnapError('%s is not a Cinder volume file (volume-<volume id>)' % report.path)
    volume_id = parts[1]
    dest = os.path.abspath(dest)
    record = check_dest(dest, volume_id, snapshot_id, fmt)
    if record is not None:
        return noop_plan(dest, volume_id, snapshot_id, fmt, record, report.path)

    # While volume_snapshot's journal exists the chain may be half-merged.
    journal = ShareVolume(os.path.dirname(report.path), volume_id).journal_path
    if os.path.lexists(journal):
        raise VolsnapError('a snapshot operation on volume %s was interrupted (%s exists), so the chain may be half '
                           'merged; finish it with volsnap.openstack.volume_snapshot first' % (volume_id, journal))
    if not report.safe:
        raise VolsnapError('the backing chain of %s is unsafe, nothing was changed: %s'
                           % (report.path, report.summary()), problems=[p.as_dict() for p in report.problems])
    info = report.info
    if info is None or snapshot_id not in info.snapshots:
        known = ', '.join(sorted(info.snapshots)) if info is not None else 'none'
        raise VolsnapError('volume %s has no snapshot %s in %s (known snapshots: %s)'
                           % (volume_id, snapshot_id, report.info_file, known))
    snap_file = info.snapshots[snapshot_id]
    names = [layer.image.filename for layer in report.layers]
    if snap_file not in names:
        raise VolsnapError('the file %s of snapshot %s is not in the backing chain of %s'
                           % (snap_file, snapshot_id, report.active))
    index = names.index(snap_file)
    snap_layer = report.layers[index]
    if index + 1 >= len(report.layers) or not snap_layer.image.backing_file:
        raise VolsnapError('the file %s of snapshot %s has no backing file, so it holds no snapshot data'
                           % (snap_file, snapshot_id))
    # The snapshot file declares the format of the source; every layer below declares its backing's.
    # Without these qemu would probe a format, and a raw layer could be read as an image (OSSA 2014-033).
    for layer in report.layers[index:]:
        if layer.image.backing_file and not layer.image.backing_format:
            raise VolsnapError('%s does not declare the format of its backing file %s, so qemu would have to probe '
                               'it; refusing to clone snapshot %s (set it with qemu-img rebase -u -b <backing> '
                               '-F <format>)' % (layer.image.filename, layer.image.backing_file, snapshot_id))
    for layer in report.layers[index + 1:]:
        if layer.image.encrypted:
            raise VolsnapError('%s is encrypted; cloning encrypted volumes is not supported' % layer.image.filename)
    source = report.layers[index + 1].image
    # The format qemu-img reads the source as: the trusted one (the snapshot file's declaration, which must agree
    # with volume_format for volume-<id>), never the content's alone (the walk refused content that disagrees).
    source_format = report.layers[index + 1].trusted_format
    # The volume file gives the new file its owner and mode. After an online delete flattened the chain
    # (Nova's blockRebase onto nothing) volume-<id> is gone and the active file stands for it.
    reference = report.path if os.path.exists(report.path) else report.layers[0].image.path
    tmp = temporary_path(dest)
    steps = [CLONE.step('lock', volume_id=volume_id)]
    if os.path.lexists(tmp):
        steps.append(CLONE.step('remove_stale_tmp', dest=dest))
    steps += [
        CLONE.step('create_tmp', dest=dest, like=reference),
        CLONE.step('convert', dest=dest, snapshot_id=snapshot_id, source=source.path, source_format=source_format,
                   virtual_size=source.virtual_size, format=fmt,
                   command=tuple(argv(qemu_img, convert_args(source.path, source_format, fmt, tmp)))),
        CLONE.step('fsync', dest=dest),
        CLONE.step('record', dest=dest, like=reference, record={
            'version': SIDECAR_VERSION,
            'volume_id': volume_id,
            'snapshot_id': snapshot_id,
            'format': fmt,
            'source': os.path.basename(source.path),
            'source_format': source_format,
            'virtual_size': source.virtual_size,
            'dest': os.path.basename(dest),
        }),
        CLONE.step('publish', dest=dest),
    ]
    return ClonePlan(volume_id=volume_id, snapshot_id=snapshot_id, dest=dest, format=fmt, steps=tuple(steps),
                     source=source.path, source_format=source_format, virtual_size=source.virtual_size,
                     volume_path=reference)


def noop_plan(dest: str, volume_id: str, snapshot_id: str, fmt: str, record: Dict[str, Any],
              volume_path: Optional[str] = None) -> ClonePlan:
    """The plan when ``dest`` already holds this clone (``record`` is its sidecar)."""
    source = record.get('source')
    if source and volume_path:
        source = os.path.join(os.path.dirname(volume_path), source)
    size = record.get('virtual_size')
    keep = CLONE.step('keep', dest=dest, volume_id=volume_id, snapshot_id=snapshot_id, format=fmt)
    return ClonePlan(volume_id=volume_id, snapshot_id=snapshot_id, dest=dest, format=fmt, steps=(keep,),
                     source=source, source_format=record.get('source_format'),
                     virtual_size=size if isinstance(size, int) else None, volume_path=volume_path)


# ---------------------------------------------------------------------------------------------
# Running a plan: one handler per action of CLONE
# ---------------------------------------------------------------------------------------------

def _keep(step: Step, context: RunContext) -> None:
    """dest is this clone already; a regular file still at the temporary name is a second link to it, left by a run
    that died after publishing dest: removed."""
    tmp = temporary_path(step.args['dest'])
    if os.path.isfile(tmp) and not os.path.islink(tmp):
        remove_if_exists(tmp)


def _lock(step: Step, context: RunContext) -> None:
    """Nothing to do here: :func:`clone_volume` takes the volume lock before it plans and releases it after the
    run; the step states it in the plan."""


def _clear_tmp(tmp: str) -> None:
    if os.path.isdir(tmp) and not os.path.islink(tmp):
        raise VolsnapError('%s is a directory; remove it so the clone can use that name' % tmp)
    remove_if_exists(tmp)  # a stale temp file of an interrupted run (or a link planted there: never followed)


def _remove_stale_tmp(step: Step, context: RunContext) -> None:
    _clear_tmp(temporary_path(step.args['dest']))


def stale_sidecar_temporaries(dest: str) -> List[str]:
    """Temporary files of an interrupted atomic write of ``dest``'s sidecar (regular files only)."""
    directory, sidecar = os.path.dirname(dest), os.path.basename(sidecar_path_for(dest))
    found = []
    try:
        names = os.listdir(directory)
    except OSError:
        return []
    for name in sorted(names):
        if is_temporary_name(name, sidecar, TEMP_SUFFIX):
            try:
                lstat_regular(os.path.join(directory, name))
            except OSError:
                continue
            found.append(os.path.join(directory, name))
    return found


def _create_tmp(step: Step, context: RunContext) -> None:
    """The output file is created by the module (O_CREAT | O_EXCL | O_NOFOLLOW) with the final mode and owner (those
    of the volume file) before qemu-img writes a byte of the snapshot's data, which it writes through this process's
    descriptor of that very file: no other user may read it at any moment, and no link planted under the temporary
    name is ever followed. The descriptor goes into the run context."""
    dest, like = step.args['dest'], step.args['like']
    tmp = temporary_path(dest)
    _clear_tmp(tmp)  # also when it appeared since the plan was made
    for path in stale_sidecar_temporaries(dest):
        remove_if_exists(path)
    try:
        attributes = share_file_attributes(like) if like else FileAttributes(0o600)
    except ShareFileError as exc:
        raise VolsnapError('the volume file %s %s; nothing was changed' % (like, exc.strerror))
    context.set('tmp', tmp)
    context.set('fd', create_share_file(tmp, attributes))


def _fd(context: RunContext) -> int:
    fd = context.get('fd')
    if not isinstance(fd, int):
        raise VolsnapError('internal error: a clone step before its temporary file was created')
    return fd


def _convert(qemu: QemuImg, step: Step, context: RunContext) -> None:
    """qemu-img writes the snapshot's data through the descriptor of the temporary file; the output is verified."""
    a, fd = step.args, _fd(context)
    qemu.run(convert_args(a['source'], a['source_format'], a['format'], descriptor_path(fd)))
    context.set('virtual_size', _verify_output(temporary_path(a['dest']), fd, a['format'], a['virtual_size']))


def _verify_output(tmp: str, fd: int, fmt: str, virtual_size: Optional[int]) -> int:
    """The output (the file open as ``fd``, still named ``tmp``) must be a plain file of format ``fmt`` and
    ``virtual_size``; returns the size found."""
    st = os.fstat(fd)
    try:
        named: Optional[os.stat_result] = lstat_regular(tmp)
    except OSError:
        named = None
    if named is None or (named.st_dev, named.st_ino) != (st.st_dev, st.st_ino):
        raise VolsnapError('%s was replaced while qemu-img wrote the clone; nothing was published' % tmp)
    # qemu rounds a size that is not a multiple of 512 up to the next sector
    sizes = (virtual_size, ((virtual_size or 0) + 511) // 512 * 512)
    if fmt == 'raw':
        if st.st_size not in sizes:
            raise VolsnapError('qemu-img wrote %d bytes to %s, expected %s' % (st.st_size, tmp, virtual_size))
        return st.st_size
    image = inspect_image(tmp)
    if image.format != 'qcow2' or image.backing_file or image.data_file or image.virtual_size not in sizes:
        raise VolsnapError('qemu-img wrote an unexpected image to %s (format %s, backing file %s, %s bytes)'
                           % (tmp, image.format, image.backing_file, image.virtual_size))
    return int(image.virtual_size or 0)


def _fsync(step: Step, context: RunContext) -> None:
    fd = _fd(context)
    os.fsync(fd)
    context.set('inode', os.fstat(fd).st_ino)


def _record(step: Step, context: RunContext) -> None:
    """The sidecar: the plan's record and the inode of the file written."""
    record = dict(step.args['record'], inode=context.get('inode'))
    sidecar = sidecar_path_for(step.args['dest'])
    write_atomic(sidecar, json.dumps(record, indent=1, sort_keys=True), like=step.args['like'])
    context.set('sidecar', sidecar)


def _publish(step: Step, context: RunContext) -> None:
    """Give the file open as the context's descriptor (named tmp) the name dest without ever replacing an existing
    dest (a symlink planted there included): a hard link made from the descriptor, then tmp is unlinked."""
    fd, dest = _fd(context), step.args['dest']
    tmp = temporary_path(dest)
    try:
        publish_descriptor(fd, dest)
    except OSError as exc:
        if exc.errno == errno.EEXIST:
            raise VolsnapError('dest %s appeared while the clone was being made; it was left alone' % dest)
        if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK, errno.ENOSYS, errno.ENOENT):
            raise
        # No hard links on this file system (or no /proc): rename, after checking once more that tmp is still the
        # file written and that nothing is at dest.
        st, mine = os.lstat(tmp), os.fstat(fd)
        if (st.st_dev, st.st_ino) != (mine.st_dev, mine.st_ino):
            raise VolsnapError('%s was replaced while the clone was being made; nothing was published' % tmp)
        if os.path.lexists(dest):
            raise VolsnapError('dest %s appeared while the clone was being made; it was left alone' % dest)
        os.rename(tmp, dest)
    else:
        remove_if_same(tmp, fd)
    context.set('published', dest)
    fsync_dir(os.path.dirname(dest))


def clone_handlers(qemu: QemuImg) -> Dict[str, Handler]:
    """The one handler table of :data:`CLONE` (``qemu`` runs the convert)."""
    return {
        'keep': _keep,
        'lock': _lock,
        'remove_stale_tmp': _remove_stale_tmp,
        'create_tmp': _create_tmp,
        'convert': functools.partial(_convert, qemu),
        'fsync': _fsync,
        'record': _record,
        'publish': _publish,
    }


def _end_run(context: RunContext) -> None:
    """Close the temporary file; unless dest was published, remove it and the record written beside it (a sidecar
    without its file means nothing, but none is left beside a file this run did not make)."""
    fd = context.get('fd')
    if fd is None:
        return
    try:
        if not context.get('published'):
            try:
                remove_if_same(context.get('tmp'), fd)
            except OSError:
                pass
            if context.get('sidecar'):
                try:
                    remove_if_exists(context.get('sidecar'))
                except OSError:
                    pass
    finally:
        os.close(fd)
        context.set('fd', None)


def execute_clone(plan: ClonePlan, qemu: QemuImg) -> RunContext:
    """Run the steps of ``plan`` (the convert through ``qemu``); returns what the run learnt."""
    context = RunContext()
    try:
        Executor(CLONE, clone_handlers(qemu)).run(plan.steps, context)
    finally:
        _end_run(context)
    return context


@dataclass
class CloneRequest:
    snapshot_id: str
    dest: str
    format: str = 'raw'
    volume_path: Optional[str] = None
    share: Optional[str] = None
    volume_id: Optional[str] = None
    max_depth: int = DEFAULT_MAX_DEPTH
    lock_timeout: float = 60.0
    qemu_img: str = 'qemu-img'
    volume_format: Optional[str] = None  # Cinder's format of the source volume-<id> (see _chain.FormatTrust)


def clone_volume(req: CloneRequest, runner: Runner,
                 check_mode: bool = False) -> Dict[str, Any]:
    """Plan and (unless ``check_mode``) run a clone under the volume's lock; returns the module result.

    An ``OSError`` on a file (the lock, the temporary output, the record, dest: ENOSPC, EDQUOT, EROFS, EACCES, EIO)
    becomes a :class:`VolsnapError` naming the file. volume_clone keeps no journal: a failed clone removed its
    temporary output and record, never published dest, so nothing is pending and a rerun starts again.
    """
    try:
        return _clone_volume(req, runner, check_mode)
    except OSError as exc:
        raise VolsnapError('%s. Nothing is pending (volume_clone keeps no journal: a clone that failed removed its '
                           'temporary output and record and never published dest): fix the cause (free space or '
                           'inodes, a read-only file system, permissions) and run again; a rerun checks an existing '
                           'dest against its record' % os_error_text(exc, req.dest),
                           file=os_error_file(exc, req.dest), pending=None)


def _clone_volume(req: CloneRequest, runner: Runner, check_mode: bool) -> Dict[str, Any]:
    check_id('snapshot_id', req.snapshot_id)
    if req.max_depth < 1:
        raise VolsnapError('max_depth must be at least 1, got %d' % req.max_depth)
    path, share, volume_id = resolve_volume(req.volume_path, req.share, req.volume_id)
    dest = os.path.abspath(req.dest)
    volume = ShareVolume(os.path.dirname(path), volume_id)
    directory = volume.directory
    if not check_mode:
        # While no run has ever locked this volume, judge it first without making the lock file, so that a refused
        # request or one with nothing to do leaves nothing in the share.
        probe = volume.judge_unlocked(lambda: clone_volume(req, runner, check_mode=True),
                                      lambda result: not result['changed'])
        if probe is not None:
            return probe
    lock = volume.lock(req.lock_timeout)
    # Check mode creates nothing: it takes the lock only when its file already exists.
    locked = not check_mode or os.path.exists(volume.lock_path)
    if locked:
        if not os.path.isdir(directory):
            raise VolsnapError('the share %s does not exist' % directory)
        lock.acquire()
    try:
        # Leftovers of a killed volume_snapshot on this volume (its .info and journal temporary files): only a run
        # holding the lock writes them, so while we hold it they are stale.
        removed = volume.remove_stale_temporaries(check_mode) if locked and os.path.isdir(directory) else []
        record = check_dest(dest, volume_id, req.snapshot_id, req.format)
        if record is not None:
            plan = noop_plan(dest, volume_id, req.snapshot_id, req.format, record, path)
        else:
            try:
                report = inspect_chain(path, share=share, max_depth=req.max_depth, volume_format=req.volume_format)
            except (IOError, OSError) as exc:
                raise VolsnapError('cannot read the volume file %s: %s' % (exc.filename or path, exc.strerror or exc))
            plan = plan_clone(report, req.snapshot_id, dest, req.format, req.qemu_img)
        if not check_mode:
            execute_clone(plan, QemuImg(runner, req.qemu_img))
    finally:
        if locked:
            lock.release()
    result = plan.result()
    result['removed_temporaries'] = removed
    return result
