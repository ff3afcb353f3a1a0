# -*- coding: utf-8 -*-
# Copyright: volsnap.openstack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations


class ModuleDocFragment(object):

    # The connection options of openstack.cloud (plugins/module_utils/_openstack/py CONNECTION_SPEC), for every
    # module that talks to OpenStack APIs. Modules that wait for the result also list the WAIT fragment
    # (volsnap.openstack.openstack.wait; WAIT_SPEC, openstack_argument_spec(wait=True)).
    DOCUMENTATION = r'''
options:
  cloud:
    description:
      - The cloud to talk to, either the name of an entry of C(clouds.yaml) or a dict holding a whole cloud
        configuration (the content of such an entry).
      - A name supplies defaults for O(auth), O(auth_type), O(region_name) and the rest; the other options override
        them. A dict must be complete, and the other connection options must then stay unset.
      - Not needed when O(auth) is given or the C(OS_*) environment variables describe the cloud.
    type: raw
  auth:
    description:
      - The credentials the auth plugin needs. For the default C(password) plugin these are C(auth_url),
        C(username), C(password), C(project_name) and, where the cloud uses domains, C(user_domain_name) and
        C(project_domain_name). Other plugins take their own keys.
      - Not needed with a named O(cloud) or the C(OS_*) environment variables.
    type: dict
  auth_type:
    description:
      - The keystoneauth plugin to authenticate with, when the cloud does not use password authentication (for
        example C(v3applicationcredential) or C(token)). O(auth) then holds that plugin's keys.
    type: str
  region_name:
    description:
      - The region whose endpoints are used.
    type: str
  interface:
    description:
      - Which endpoint of the service catalog to use.
    type: str
    choices: [admin, internal, public]
    default: public
    aliases: [endpoint_type]
  validate_certs:
    description:
      - Whether the TLS certificates of the API endpoints are verified. Unset leaves the choice to the cloud
        configuration (verified by default).
    type: bool
    aliases: [verify]
  ca_cert:
    description:
      - A CA bundle file used to verify the TLS certificates of the API endpoints.
    type: str
    aliases: [cacert]
  client_cert:
    description:
      - A client certificate file presented to the API endpoints (TLS client authentication).
    type: str
    aliases: [cert]
  client_key:
    description:
      - The private key file of O(client_cert).
    type: str
    aliases: [key]
  api_timeout:
    description:
      - Seconds to wait for the answer to a single API request. Unset means no limit is passed to the HTTP library.
    type: int
  sdk_log_path:
    description:
      - A file the openstacksdk writes its log to. No log is written when unset.
    type: str
  sdk_log_level:
    description:
      - How much the openstacksdk logs into O(sdk_log_path); V(DEBUG) includes the HTTP requests and answers.
    type: str
    choices: [INFO, DEBUG]
    default: INFO
requirements:
  - openstacksdk (C(pip install openstacksdk)) on the host that runs the module, usually the controller
    (a play on C(localhost)).
notes:
  - The connection options are those of the C(openstack.cloud) collection and behave the same way. Values can also come
    from C(clouds.yaml) (C(./clouds.yaml), C(~/.config/openstack/clouds.yaml), C(/etc/openstack/clouds.yaml), or the file
    named by C(OS_CLIENT_CONFIG_FILE)) and from the standard C(OS_*) environment variables; see
    U(https://docs.openstack.org/openstacksdk/latest/user/config/configuration.html).
  - API errors are returned with the service's own message, the HTTP status and the request id, so they can be looked up
    in the service logs.
'''

    # wait and timeout, with openstack.cloud's defaults, for modules that wait for the requested change.
    WAIT = r'''
options:
  wait:
    description:
      - Whether to wait until the requested change is complete (for example until a snapshot is C(available)).
    type: bool
    default: true
  timeout:
    description:
      - Seconds to wait when O(wait=true).
    type: int
    default: 180
'''
