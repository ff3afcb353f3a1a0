# -*- coding: utf-8 -*-
# Copyright: volsnap.openstack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""libvirt access: domain XML parsing (pure), a thin connection wrapper (:class:`Libvirt`) and the lazy connection
a request or a batch opens once, on first use (:class:`LazyLibvirt`).

Disks are found as Nova finds them: by ``<serial>`` (the Cinder volume id) or by target dev.
The backing chain comes from the domain XML's nested ``<backingStore>`` elements (spec 000:
"querying the instance VM's disk backing chain information via the domain.XMLDesc() output").
"""

from __future__ import annotations

import os
import threading
import time
import traceback
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from typing import Any, Callable, List, Mapping, Optional, Tuple

from ansible_collections.volsnap.openstack.plugins.module_utils._nfs.chain import (
    DeclaredChain,
    normalize_format,
)
from ansible_collections.volsnap.openstack.plugins.module_utils._base.errors import VolsnapError
from ansible_collections.volsnap.openstack.plugins.module_utils._base import progress

LIBVIRT_IMPORT_ERROR: Optional[str]
try:
    import libvirt
except ImportError:
    libvirt = None
    LIBVIRT_IMPORT_ERROR = traceback.format_exc()
else:
    LIBVIRT_IMPORT_ERROR = None

DEFAULT_URI = 'qemu:///system'

# quiesce: never, auto (try the guest agent, fall back without, as Nova), required (fail without the agent)
QUIESCE_NEVER = 'never'
QUIESCE_AUTO = 'auto'
QUIESCE_REQUIRED = 'required'
QUIESCE_CHOICES = (QUIESCE_NEVER, QUIESCE_AUTO, QUIESCE_REQUIRED)


def quiesce_mode(value: Any) -> str:
    """The quiesce choice of a request or a journaled step (a journal of the earlier boolean: true is auto)."""
    if value is True or value is None:
        return QUIESCE_AUTO
    if value is False:
        return QUIESCE_NEVER
    if value in QUIESCE_CHOICES:
        return str(value)
    raise VolsnapError('quiesce %r is not one of %s' % (value, ', '.join(QUIESCE_CHOICES)))


@dataclass
class DiskInfo:
    target: str
    serial: Optional[str]
    source: Optional[str]
    format: Optional[str]
    disk_type: str
    chain: List[Tuple[str, Optional[str]]] = field(default_factory=list)
    chain_complete: bool = True

    def declared(self) -> DeclaredChain:
        return DeclaredChain(layers=[(p, normalize_format(f)) for p, f in self.chain], complete=self.chain_complete)


def _source_path(element: ET.Element) -> Optional[str]:
    source = element.find('source')
    if source is None:
        return None
    return source.get('file') or source.get('dev')


def parse_disks(xml: str) -> List[DiskInfo]:
    """All ``<disk device='disk'>`` elements of a domain XML with their declared chains."""
    try:
        root = ET.fromstring(xml)
    except ET.ParseError as exc:
        raise VolsnapError('the domain XML cannot be parsed: %s' % exc)
    disks = []
    for disk in root.findall('./devices/disk'):
        if disk.get('device', 'disk') != 'disk':
            continue
        target = disk.find('target')
        driver = disk.find('driver')
        serial = disk.find('serial')
        info = DiskInfo(
            target=target.get('dev', '') if target is not None else '',
            serial=serial.text.strip() if serial is not None and serial.text else None,
            source=_source_path(disk),
            format=driver.get('type') if driver is not None else None,
            disk_type=disk.get('type', 'file'),
        )
        if info.source:
            info.chain.append((info.source, info.format))
        node = disk.find('backingStore')
        info.chain_complete = node is not None
        while node is not None:
            path = _source_path(node)
            if path is None:
                break  # an empty <backingStore/> ends the chain
            fmt = node.find('format')
            info.chain.append((path, fmt.get('type') if fmt is not None else None))
            nested = node.find('backingStore')
            if nested is None:
                info.chain_complete = False
            node = nested
        disks.append(info)
    return disks


def find_disk(xml: str, disk: str) -> DiskInfo:
    """The disk whose target dev or serial (Cinder volume id) is ``disk``."""
    disks = parse_disks(xml)
    matches = [d for d in disks if disk in (d.target, d.serial)]
    if not matches:
        known = ', '.join('%s (serial %s)' % (d.target, d.serial or '-') for d in disks) or 'none'
        raise VolsnapError('the domain has no disk with target dev or serial %r; its disks: %s' % (disk, known))
    if len(matches) > 1:
        raise VolsnapError('more than one disk of the domain matches %r; name the target dev instead' % disk)
    found = matches[0]
    if found.disk_type not in ('file', 'block') or not found.source:
        raise VolsnapError('disk %s is a %s disk without a local source file; only file-based volumes have a '
                           'qcow2 chain to read' % (found.target, found.disk_type))
    return found


def disks_using(running: List[Tuple[str, DiskInfo]], paths: List[str]) -> List[Tuple[str, DiskInfo]]:
    """The (domain name, disk) pairs of ``running`` (:meth:`Libvirt.running_disks`) whose chain holds one of
    ``paths`` (compared after resolving links)."""
    wanted = set(os.path.realpath(p) for p in paths)
    return [(name, disk) for name, disk in running if any(os.path.realpath(p) in wanted for p, _fmt in disk.chain)]


class LazyLibvirt(object):
    """The libvirt connection of a request (or of a batch's items), made on first use.

    ``factory()`` returns a :class:`Libvirt`, or None when the bindings are missing; it is called once, under a lock,
    so the threads sharing this object share one connection. Calling the object returns that connection (or None):
    it is a factory itself, to hand to the requests that share it. ``purpose`` says in the error of :meth:`get`
    what needs the bindings.
    """

    def __init__(self, factory: Callable[[], Any], purpose: str = 'online snapshots') -> None:
        self._factory = factory
        self.purpose = purpose
        self._lock = threading.Lock()
        self._made = False
        self._libvirt: Any = None

    def __call__(self) -> Any:
        with self._lock:
            if not self._made:
                self._libvirt = self._factory()
                self._made = True
            return self._libvirt

    def get(self, needed: bool) -> Any:
        """The connection, or None without the bindings; when ``needed``, no bindings is an error."""
        libvirt_ = self()
        if libvirt_ is None and needed:
            raise VolsnapError('%s need the libvirt Python bindings on this host (python3-libvirt)' % self.purpose)
        return libvirt_


class Libvirt:
    """A connection to libvirt, opened lazily. Needs the libvirt Python bindings."""

    def __init__(self, uri: str = DEFAULT_URI) -> None:
        self.uri = uri
        self._conn: Any = None

    @property
    def conn(self) -> Any:
        if self._conn is None:
            libvirt.registerErrorHandler(lambda *args: None, None)
            try:
                self._conn = libvirt.open(self.uri)
            except libvirt.libvirtError as exc:
                raise VolsnapError('cannot connect to libvirt at %s: %s' % (self.uri, exc.get_error_message()))
        return self._conn

    def domain(self, name: str) -> Any:
        """Look a domain up by name or UUID."""
        lookups = [self.conn.lookupByName]
        if len(name) == 36:
            lookups.append(self.conn.lookupByUUIDString)
        for lookup in lookups:
            try:
                return lookup(name)
            except libvirt.libvirtError:
                continue
        raise VolsnapError('libvirt at %s has no domain named %r' % (self.uri, name))

    def find_domain(self, name: str) -> Any:
        """The domain named ``name`` (or with that UUID), or None when libvirt has no such domain.

        Other errors (libvirtd unreachable...) raise: only libvirt itself can say a domain is gone.
        """
        conn = self.conn
        lookups = [conn.lookupByName]
        if len(name) == 36:
            lookups.append(conn.lookupByUUIDString)
        for lookup in lookups:
            try:
                return lookup(name)
            except libvirt.libvirtError as exc:
                if exc.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN:
                    raise VolsnapError('libvirt at %s cannot look up domain %r: %s'
                                       % (self.uri, name, exc.get_error_message()))
        return None

    def is_running(self, dom: Any) -> bool:
        try:
            return bool(dom.isActive() == 1)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                return False
            raise VolsnapError('libvirt at %s cannot tell whether domain %s runs: %s'
                               % (self.uri, dom.name(), exc.get_error_message()))

    def xml(self, name: str) -> str:
        return str(self.domain(name).XMLDesc(0))

    def running_disks_using(self, paths: List[str]) -> List[Tuple[str, DiskInfo]]:
        """(domain name, disk) of every running domain disk whose chain holds one of ``paths``.

        Each running domain's XML is read once; the disk found carries the chain it declares.
        """
        return disks_using(self.running_disks(), paths)

    def running_disks(self) -> List[Tuple[str, DiskInfo]]:
        """(domain name, disk) of every disk of every running domain, each domain's XML read once."""
        found: List[Tuple[str, DiskInfo]] = []
        for dom in self.conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE):
            try:
                name, xml = dom.name(), dom.XMLDesc(0)
            except libvirt.libvirtError as exc:
                if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                    continue  # stopped and undefined between the listing and this read: it uses nothing now
                raise VolsnapError('libvirt at %s cannot read the XML of a running domain: %s'
                                   % (self.uri, exc.get_error_message()))
            found.extend((name, disk) for disk in parse_disks(xml))
        return found

    def _disk(self, dom: Any, disk: str) -> DiskInfo:
        return find_disk(dom.XMLDesc(0), disk)

    def disk_source(self, dom: Any, disk: str) -> Optional[str]:
        return self._disk(dom, disk).source

    def disk_chain_paths(self, dom: Any, disk: str) -> List[str]:
        return [p for p, _fmt in self._disk(dom, disk).chain]

    def external_snapshot(self, dom: Any, disk: str, overlay: str, quiesce: str = QUIESCE_AUTO) -> bool:
        """Nova's disk-only external snapshot onto a pre-created overlay (other disks excluded); True when quiesced."""
        return self.external_snapshot_disks(dom, {disk: overlay}, quiesce, atomic=False)

    def external_snapshot_disks(self, dom: Any, overlays: Mapping[str, str], quiesce: str, atomic: bool) -> bool:
        """One disk-only external snapshot of the disks ``overlays`` names (target dev -> pre-created overlay), the
        domain's other disks excluded; with ``atomic``, libvirt's ATOMIC flag: every disk switches or none does.

        ``quiesce``: ``never``, ``auto`` (quiesced through the guest agent when it answers, else retried without, as
        Nova does) or ``required`` (no guest agent: refused, nothing switched). Returns whether it was quiesced.
        """
        snap = ET.Element('domainsnapshot')
        disks = ET.SubElement(snap, 'disks')
        for other in parse_disks(dom.XMLDesc(0)):
            if other.target in overlays:
                element = ET.SubElement(disks, 'disk', name=other.target, snapshot='external', type='file')
                ET.SubElement(element, 'source', file=overlays[other.target])
                ET.SubElement(element, 'driver', type='qcow2')
            else:
                ET.SubElement(disks, 'disk', name=other.target, snapshot='no')
        xml = ET.tostring(snap).decode('utf-8')
        flags = (libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_DISK_ONLY | libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_REUSE_EXT
                 | libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_NO_METADATA)
        if atomic:
            flags |= libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_ATOMIC
        what = 'disk %s onto %s' % (', '.join(sorted(overlays)), ', '.join(overlays[d] for d in sorted(overlays)))
        if quiesce in (QUIESCE_AUTO, QUIESCE_REQUIRED):
            try:
                dom.snapshotCreateXML(xml, flags | libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_QUIESCE)
                return True
            except libvirt.libvirtError as exc:
                if quiesce == QUIESCE_REQUIRED:
                    raise VolsnapError('quiesce=required, but the quiesced snapshot of %s was refused (%s): the guest '
                                       'agent (qemu-guest-agent, and a virtio-serial channel '
                                       'org.qemu.guest_agent.0 in the domain) must answer. No disk was switched; '
                                       'use quiesce=auto to fall back to a crash-consistent snapshot'
                                       % (what, exc.get_error_message()), quiesced=False)
                # no guest agent: retry without quiesce, as Nova does
        try:
            dom.snapshotCreateXML(xml, flags)
        except libvirt.libvirtError as exc:
            raise VolsnapError('libvirt refused the external snapshot of %s: %s' % (what, exc.get_error_message()))
        return False

    def job_running(self, dom: Any, disk: str) -> bool:
        return bool(dom.blockJobInfo(disk, 0))

    def block_commit(self, dom: Any, disk: str, base: str, top: str) -> None:
        try:
            dom.blockCommit(disk, base, top, 0, libvirt.VIR_DOMAIN_BLOCK_COMMIT_RELATIVE)
        except libvirt.libvirtError as exc:
            raise VolsnapError('libvirt blockCommit of %s into %s on disk %s failed: %s'
                               % (top, base, disk, exc.get_error_message()))

    def block_rebase(self, dom: Any, disk: str, base: Optional[str]) -> None:
        flags = libvirt.VIR_DOMAIN_BLOCK_REBASE_RELATIVE if base else 0
        try:
            dom.blockRebase(disk, base, 0, flags)
        except libvirt.libvirtError as exc:
            raise VolsnapError('libvirt blockRebase of disk %s onto %s failed: %s'
                               % (disk, base or 'nothing', exc.get_error_message()))

    def wait_job(self, dom: Any, disk: str, timeout: float) -> None:
        """Wait for the block job of ``disk`` to end; its cur/end go to the operation's progress record."""
        deadline = time.monotonic() + timeout
        recorder = progress.current()
        while True:
            info = dom.blockJobInfo(disk, 0)
            if not info:
                break
            if info.get('end'):
                recorder.bytes(info.get('cur', 0), info['end'])
            if time.monotonic() > deadline:
                raise VolsnapError('the block job on disk %s did not finish within %d s; it keeps running in libvirt: '
                                   'run the module again with the same arguments to wait for it and finish'
                                   % (disk, timeout))
            time.sleep(0.05)

    def close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            finally:
                self._conn = None
