/**
 * `credvault daemon unit`: a hardened systemd unit for the daemon. The master key comes in through
 * LoadCredential= (never the environment or the unit); state lives in StateDirectory=, the socket in
 * RuntimeDirectory=. MemoryDenyWriteExecute= is left out on purpose: V8 needs writable+executable
 * memory for its JIT and dies under it.
 */
/**
 * One word of a command line in a unit file: as it is when it needs nothing, else in double quotes
 * with \ and " escaped; % (specifiers) and $ (variables) doubled either way (systemd.service(5),
 * "Command lines").
 */
export function unitWord(word: string): string {
  const escaped = word.replace(/%/g, '%%').replace(/\$/g, '$$$$');
  return /^[\w@+=:,./-]+$/.test(word) ? escaped : `"${escaped.replace(/\\/g, '\\\\').replace(/"/g, '\\"')}"`;
}

/**
 * The key's lines: the master key through LoadCredential= (a missing file stops the service from
 * starting, status 243/CREDENTIALS), or, when the key is a KMS key (CREDENTIAL_KMS_URI where the
 * unit is printed), its URI and where the KMS's own credentials go.
 */
function keyLines(kmsUri: string | null): string {
  if (!kmsUri) {
    return `# Put the master key in /etc/credstore/credvault.master-key (0600, root), or use systemd-creds.
LoadCredential=credential_master_key:/etc/credstore/credvault.master-key`;
  }
  // Environment= in double quotes: \ and " escaped, % (specifiers) doubled; $ is not expanded there.
  const value = `CREDENTIAL_KMS_URI=${kmsUri}`
    .replace(/%/g, '%%')
    .replace(/\\/g, '\\\\')
    .replace(/"/g, '\\"');
  return `# The key-encryption key is a KMS key. Its credentials go in /etc/credvault/daemon.env (0600):
# AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY (or an instance role, nothing to set), VAULT_TOKEN for
# Vault Transit, GOOGLE_APPLICATION_CREDENTIALS naming a key file the service's user can read.
Environment="${value}"`;
}

export function systemdUnit(options: {
  user: string | null;
  bin: string;
  listen: string;
  kmsUri?: string | null;
}): string {
  const user = options.user ? `User=${options.user}\nGroup=${options.user}` : 'DynamicUser=yes';
  return `[Unit]
Description=credvault daemon: keeps ad platform tokens fresh and serves them locally
Documentation=https://github.com/credvault/credvault#systemd
After=network-online.target postgresql.service
Wants=network-online.target

[Service]
Type=notify
NotifyAccess=all
ExecStart=${unitWord(options.bin)} daemon --listen ${unitWord(options.listen)}
ExecReload=/bin/kill -HUP $MAINPID
Restart=on-failure
RestartSec=5s
TimeoutStopSec=15s
WatchdogSec=60s
${user}
StateDirectory=credvault
StateDirectoryMode=0700
# /run/credvault: for an endpoint on a unix socket, --listen unix:/run/credvault/daemon.sock
# (0600, for this service's user only); the embedded database's socket stays in the state folder.
RuntimeDirectory=credvault
RuntimeDirectoryMode=0700
Environment=CREDVAULT_HOME=%S/credvault
${keyLines(options.kmsUri ?? null)}
# For PostgreSQL, put DATABASE_URL=postgres://… in this file (0600).
EnvironmentFile=-/etc/credvault/daemon.env
UMask=0077
NoNewPrivileges=yes
ProtectSystem=strict
ProtectHome=yes
PrivateTmp=yes
PrivateDevices=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectClock=yes
ProtectHostname=yes
ProtectProc=invisible
ProcSubset=pid
RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6
RestrictNamespaces=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
LockPersonality=yes
CapabilityBoundingSet=
AmbientCapabilities=
SystemCallArchitectures=native
SystemCallFilter=@system-service
SystemCallFilter=~@privileged
LimitNOFILE=65536

[Install]
WantedBy=multi-user.target
`;
}
