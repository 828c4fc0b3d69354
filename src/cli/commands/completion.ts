import type { Command } from 'commander';
import { PLATFORM_IDS } from '../../providers/catalog.js';
import { AUDIT_OUTCOMES } from '../../services/audit.js';
import { ROLES } from '../../services/clients.js';
import { CONNECTION_STATUSES } from '../../services/connections.js';
import type { Runtime } from '../run.js';
import type { NameKind } from './names.js';
import { FORMATS } from './token.js';

/**
 * Shell completion generated from the command tree itself, so a new command or flag completes without
 * anyone editing a script: subcommands, flags, platform names where an argument is a platform, and
 * the values of options (their choices, or file names).
 */

/**
 * What an option's value completes to: a fixed list, a file name, the names of the vault's
 * connections, apps or clients (asked of `credvault __names`), or nothing (free text).
 */
type Values = readonly string[] | 'file' | 'text' | { names: NameKind };

/** Options whose value is a connection or an app of the vault. */
const OPTION_NAMES: Record<string, NameKind> = { '--connection': 'connections', '--app': 'apps' };

/** Commands whose first argument is a connection, an app or a client, by the argument's name. */
const ARGUMENT_NAMES: Record<string, NameKind> = { conn: 'connections', app: 'apps' };

/** Values of options that credvault checks itself (commander does not know their choices). */
const OPTION_VALUES: Record<string, readonly string[]> = {
  '--format': FORMATS,
  '--status': CONNECTION_STATUSES,
  '--role': ROLES,
  '--platform': PLATFORM_IDS,
  '--outcome': AUDIT_OUTCOMES,
};

interface Node {
  path: string;
  words: string[];
  /** Values of the first argument: platform names, or its declared choices. */
  argValues: readonly string[];
  /** The first argument is a file. */
  fileArg: boolean;
  /** The first argument is the name of one of the vault's connections, apps or clients. */
  nameArg: NameKind | null;
  description: string;
  children: Node[];
  flags: string[];
  /** Options that take a value, by long name. */
  values: Map<string, Values>;
}

function valuesOf(long: string): Values {
  if (OPTION_VALUES[long]) return OPTION_VALUES[long];
  if (OPTION_NAMES[long]) return { names: OPTION_NAMES[long] };
  return long === '--file' || long === '--home' || long.endsWith('-file') ? 'file' : 'text';
}

function walk(command: Command, prefix: string[]): Node {
  const children = command.commands
    .filter((c) => c.name() !== 'help' && !(c as unknown as { _hidden?: boolean })._hidden)
    .map((c) => walk(c, [...prefix, c.name()]));
  const flags = command.options.flatMap((o) => [o.long, o.short].filter((f): f is string => Boolean(f)));
  const values = new Map<string, Values>();
  for (const o of command.options)
    if (o.long && (o.required || o.optional)) values.set(o.long, valuesOf(o.long));
  const firstArg = command.registeredArguments[0];
  return {
    path: prefix.join(' '),
    words: children.map((c) => c.path.split(' ').pop()!),
    argValues: firstArg?.name() === 'platform' ? PLATFORM_IDS : (firstArg?.argChoices ?? []),
    fileArg: firstArg?.name() === 'file',
    nameArg:
      prefix.join(' ') === 'clients revoke' ? 'clients' : (ARGUMENT_NAMES[firstArg?.name() ?? ''] ?? null),
    description: command.description(),
    children,
    flags: [...flags, '--help'],
    values,
  };
}

function flatten(node: Node): Node[] {
  return [node, ...node.children.flatMap(flatten)];
}

/** Every value-taking option in the tree, with what it completes to (the same name means the same). */
function allValues(root: Node): Map<string, Values> {
  const all = new Map<string, Values>();
  for (const node of flatten(root)) for (const [flag, v] of node.values) all.set(flag, v);
  return all;
}

function bash(root: Node, globals: string[]): string {
  const cases = flatten(root)
    .map((node) => {
      const words = [...node.words, ...node.flags, ...globals, ...node.argValues];
      return `    "${node.path}") words="${[...new Set(words)].join(' ')}"${node.fileArg ? '; files=1' : ''}${node.nameArg ? `; names=${node.nameArg}` : ''} ;;`;
    })
    .join('\n');
  const values = [...allValues(root)];
  const lists = values
    .filter(([, v]) => Array.isArray(v))
    .map(
      ([flag, v]) =>
        `    ${flag}) COMPREPLY=($(compgen -W "${(v as string[]).join(' ')}" -- "$cur")); return ;;`,
    );
  const named = values
    .filter(
      (entry): entry is [string, { names: NameKind }] => typeof entry[1] === 'object' && 'names' in entry[1],
    )
    .map(
      ([flag, v]) =>
        `    ${flag}) COMPREPLY=($(compgen -W "$(__credvault_names ${v.names})" -- "$cur")); __credvault_unbreak; return ;;`,
    );
  const files = values.filter(([, v]) => v === 'file').map(([flag]) => flag);
  const text = values.filter(([, v]) => v === 'text').map(([flag]) => flag);
  return `# credvault bash completion. Load with: source <(credvault completion bash)
# The names of connections, apps and clients: asked of credvault itself (with the --home or
# --database-url given on the line), nothing when it cannot say within two seconds.
__credvault_words() {
  # The line as typed up to the cursor, split at blanks only, into the array words: bash's COMP_WORDS
  # is also split at ':' and '=' (COMP_WORDBREAKS: a URL's port, a connection's platform:account).
  # zsh (bashcompinit) splits COMP_WORDS at blanks already, and its read has no -a.
  if [[ -n "\${BASH_VERSION-}" && -n "$COMP_LINE" ]]; then
    read -ra words <<< "\${COMP_LINE:0:COMP_POINT}"
    [[ \${#words[@]} -eq 0 || "\${COMP_LINE:COMP_POINT-1:1}" == [[:blank:]] ]] && words+=("")
  else
    words=("\${COMP_WORDS[@]:0:$((COMP_CWORD + 1))}")
  fi
}
__credvault_names() {
  local i words args=()
  __credvault_words
  for ((i = 1; i < \${#words[@]} - 1; i++)); do
    case "\${words[i]}" in
      --home|--database-url) args+=("\${words[i]}" "\${words[i+1]}"); i=$((i + 1)) ;;
      --home=*|--database-url=*) args+=("\${words[i]}") ;;
    esac
  done
  command credvault "\${args[@]}" __names "$1" 2>/dev/null
}
_credvault() {
  # Not \`path\`: zsh ties that name to PATH, and the names would be asked of no credvault.
  local cur prev cmd word i words line cword files names nargs
  __credvault_words
  line=("\${words[@]}")
  cword=$((\${#line[@]} - 1))
  cur="\${line[cword]}"
  prev="\${line[cword-1]}"
  # After \`--\` (exec's command) the words are another program's: file names only.
  for ((i = 1; i < cword; i++)); do
    if [[ "\${line[i]}" == "--" ]]; then
      compopt -o default 2>/dev/null; COMPREPLY=(); return
    fi
  done
  # The value of an option: its choices, a file name, or nothing to offer.
  case "$prev" in
${[...lists, ...named].join('\n')}
    ${files.join('|')}) compopt -o filenames 2>/dev/null; COMPREPLY=($(compgen -f -- "$cur")); return ;;
    ${text.join('|')}) COMPREPLY=(); return ;;
  esac
  # The command's path, and how many arguments follow it (an option's value is not one).
  cmd=""
  nargs=0
  for ((i = 1; i < cword; i++)); do
    word="\${line[i]}"
    [[ "$word" == -* ]] && continue
    case "$cmd\${cmd:+ }$word" in
${flatten(root)
  .filter((n) => n.path)
  .map((n) => `      "${n.path}") cmd="${n.path}" ;;`)
  .join('\n')}
      *) case "\${line[i-1]}" in
           ${[...allValues(root).keys()].join('|')}) ;;
           *) nargs=$((nargs + 1)) ;;
         esac ;;
    esac
  done
  case "$cmd" in
${cases}
    *) words="" ;;
  esac
  COMPREPLY=($(compgen -W "$words" -- "$cur"))
  if [[ -n "$names" && $nargs -eq 0 && "$cur" != -* ]]; then
    COMPREPLY+=($(compgen -W "$(__credvault_names "$names")" -- "$cur"))
  fi
  if [[ -n "$files" && "$cur" != -* ]]; then
    compopt -o filenames 2>/dev/null; COMPREPLY+=($(compgen -f -- "$cur"))
  fi
  __credvault_unbreak
}
# Bash replaces only what follows the last ':' or '=' of the word (they break words for it): the
# offers lose what comes before, so that \`google_ads:12\` becomes \`google_ads:1234567890\`.
__credvault_unbreak() {
  local head="\${cur%"\${cur##*[:=]}"}"
  if [[ -n "\${BASH_VERSION-}" && -n "$head" && "$COMP_WORDBREAKS" == *"\${head: -1}"* ]]; then
    COMPREPLY=("\${COMPREPLY[@]#"$head"}")
  fi
}
complete -F _credvault credvault
`;
}

function zsh(root: Node, globals: string[]): string {
  return `#compdef credvault
# credvault zsh completion. Load with: source <(credvault completion zsh)
# Or save it as _credvault in a folder on $fpath (before compinit runs).
# compinit -i: load the completion system if it is not, skipping (not asking about) insecure folders.
(( $+functions[compdef] )) || { autoload -Uz compinit && compinit -i; }
autoload -U +X bashcompinit && bashcompinit
${bash(root, globals).replace(/^# credvault bash completion.*\n/, '')}# Autoloaded from $fpath (the first TAB runs this file as _credvault): that TAB is a completion too,
# so complete it now; later ones go straight to the function registered above.
if [[ \${zsh_eval_context[-1]} == loadautofunc ]]; then
  _bash_complete -F _credvault
fi
`;
}

function fish(root: Node, globals: string[]): string {
  const quote = (text: string) => `'${text.replace(/\\/g, '\\\\').replace(/'/g, "\\'")}'`;
  const option = (flag: string, values: Values | undefined) => {
    const long = `-l ${flag.slice(2)}`;
    if (!values) return long;
    if (values === 'file') return `${long} -r -F`;
    if (values === 'text') return `${long} -x`;
    if ('names' in values) return `${long} -x -a ${quote(`(__credvault_names ${values.names})`)}`;
    return `${long} -x -a ${quote(values.join(' '))}`;
  };
  const all = allValues(root);
  const lines = [
    '# credvault fish completion. Load with: credvault completion fish | source',
    'complete -c credvault -f',
    // How many words (neither options nor their values) follow `credvault` on the line; nothing, and
    // false, after `--` (exec's command). Options' values are skipped: __fish_use_subcommand takes the
    // `/tmp` of `credvault --home /tmp` for the command, and offers none.
    'function __credvault_words',
    '    set -l tokens (commandline -opc)',
    '    set -e tokens[1]',
    '    set -l skip 0',
    '    set -l words 0',
    '    for token in $tokens',
    '        if test $skip = 1',
    '            set skip 0',
    '            continue',
    '        end',
    '        switch $token',
    "            case '--'",
    '                return 1',
    `            case ${[...all.keys()].join(' ')}`,
    '                set skip 1',
    "            case '-*'",
    "            case '*'",
    '                set words (math $words + 1)',
    '        end',
    '    end',
    '    echo $words',
    'end',
    'function __credvault_needs_command',
    '    set -l words (__credvault_words); or return 1',
    '    test $words = 0',
    'end',
    // True when the word being completed is the first argument of the command named by $argv (its
    // words given, no argument after them yet).
    'function __credvault_first_argument',
    '    set -l words (__credvault_words); or return 1',
    '    test $words = (count $argv)',
    'end',
    // The names of connections, apps and clients, asked of credvault (with the --home or
    // --database-url given on the line); nothing when it cannot say within two seconds.
    'function __credvault_names',
    '    set -l tokens (commandline -opc)',
    '    set -l args',
    '    for i in (seq 2 (count $tokens))',
    '        switch $tokens[$i]',
    '            case --home --database-url',
    '                set -a args $tokens[$i] $tokens[(math $i + 1)]',
    "            case '--home=*' '--database-url=*'",
    '                set -a args $tokens[$i]',
    '        end',
    '    end',
    '    command credvault $args __names $argv[1] 2>/dev/null',
    'end',
  ];
  for (const flag of globals) lines.push(`complete -c credvault ${option(flag, all.get(flag))}`);
  for (const node of flatten(root)) {
    // Every word of the path seen (not only the last: `list` is under apps, connections and audit).
    const seen = node.path
      ? node.path.split(' ').map((word) => `__fish_seen_subcommand_from ${word}`)
      : ['__credvault_needs_command'];
    const here = seen.join('; and ');
    // A node's subcommands and argument values are offered until one of its subcommands is given.
    const open = node.words.length
      ? `${here}; and not __fish_seen_subcommand_from ${node.words.join(' ')}`
      : here;
    for (const child of node.children) {
      lines.push(
        `complete -c credvault -n ${quote(open)} -a ${child.path.split(' ').pop()} -d ${quote(child.description)}`,
      );
    }
    if (!node.path) continue;
    const leaf = node.children.length ? open : here;
    for (const flag of node.flags.filter((f) => f.startsWith('--'))) {
      lines.push(`complete -c credvault -n ${quote(leaf)} ${option(flag, node.values.get(flag))}`);
    }
    if (node.argValues.length) {
      lines.push(`complete -c credvault -n ${quote(leaf)} -a ${quote(node.argValues.join(' '))}`);
    }
    if (node.fileArg) lines.push(`complete -c credvault -n ${quote(leaf)} -F`);
    if (node.nameArg) {
      lines.push(
        `complete -c credvault -n ${quote(`${leaf}; and __credvault_first_argument ${node.path}`)} -a ${quote(`(__credvault_names ${node.nameArg})`)}`,
      );
    }
  }
  return `${lines.join('\n')}\n`;
}

export async function completion(rt: Runtime, shell: string, program: Command): Promise<void> {
  const root = walk(program, []);
  const globals = root.flags.filter((f) => f.startsWith('--') && f !== '--help');
  root.flags = [];
  const script =
    shell === 'bash' ? bash(root, globals) : shell === 'zsh' ? zsh(root, globals) : fish(root, globals);
  if (rt.out.json) return rt.out.writeJson({ shell, script });
  rt.out.raw(script);
}
