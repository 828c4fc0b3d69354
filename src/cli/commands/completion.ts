import type { Command } from 'commander';
import { PLATFORM_IDS } from '../../providers/catalog.js';
import type { Runtime } from '../run.js';

/**
 * Shell completion generated from the command tree itself, so a new command or flag completes without
 * anyone editing a script: subcommands, flags, and platform names where an argument is a platform.
 */

interface Node {
  path: string;
  words: string[];
  platformArg: boolean;
  description: string;
  children: Node[];
  flags: string[];
}

function walk(command: Command, prefix: string[]): Node {
  const children = command.commands
    .filter((c) => c.name() !== 'help')
    .map((c) => walk(c, [...prefix, c.name()]));
  const flags = command.options.flatMap((o) => [o.long, o.short].filter((f): f is string => Boolean(f)));
  const firstArg = (command as unknown as { registeredArguments?: Array<{ name(): string }> })
    .registeredArguments?.[0];
  return {
    path: prefix.join(' '),
    words: children.map((c) => c.path.split(' ').pop()!),
    platformArg: firstArg?.name() === 'platform',
    description: command.description(),
    children,
    flags: [...flags, '--help'],
  };
}

function flatten(node: Node): Node[] {
  return [node, ...node.children.flatMap(flatten)];
}

function bash(root: Node, globals: string[]): string {
  const cases = flatten(root)
    .map((node) => {
      const words = [...node.words, ...node.flags, ...globals, ...(node.platformArg ? PLATFORM_IDS : [])];
      return `    "${node.path}") words="${[...new Set(words)].join(' ')}" ;;`;
    })
    .join('\n');
  return `# credvault bash completion. Load with: source <(credvault completion bash)
_credvault() {
  local cur path word i words
  cur="\${COMP_WORDS[COMP_CWORD]}"
  path=""
  for ((i = 1; i < COMP_CWORD; i++)); do
    word="\${COMP_WORDS[i]}"
    [[ "$word" == -* ]] && continue
    case "$path\${path:+ }$word" in
${flatten(root)
  .filter((n) => n.path)
  .map((n) => `      "${n.path}") path="${n.path}" ;;`)
  .join('\n')}
    esac
  done
  case "$path" in
${cases}
    *) words="" ;;
  esac
  COMPREPLY=($(compgen -W "$words" -- "$cur"))
}
complete -F _credvault credvault
`;
}

function zsh(root: Node, globals: string[]): string {
  return `#compdef credvault
# credvault zsh completion. Load with: source <(credvault completion zsh)
autoload -U +X bashcompinit && bashcompinit
${bash(root, globals).replace(/^# credvault bash completion.*\n/, '')}`;
}

function fish(root: Node, globals: string[]): string {
  const quote = (text: string) => `'${text.replace(/'/g, "\\'")}'`;
  const lines = [
    '# credvault fish completion. Load with: credvault completion fish | source',
    'complete -c credvault -f',
  ];
  for (const flag of globals) lines.push(`complete -c credvault -l ${flag.replace(/^--/, '')}`);
  for (const node of flatten(root)) {
    const condition = node.path
      ? `__fish_seen_subcommand_from ${node.path.split(' ').pop()}`
      : '__fish_use_subcommand';
    for (const child of node.children) {
      lines.push(
        `complete -c credvault -n ${quote(condition)} -a ${child.path.split(' ').pop()} -d ${quote(child.description)}`,
      );
    }
    if (node.path) {
      for (const flag of node.flags.filter((f) => f.startsWith('--'))) {
        lines.push(`complete -c credvault -n ${quote(condition)} -l ${flag.slice(2)}`);
      }
      if (node.platformArg) {
        lines.push(`complete -c credvault -n ${quote(condition)} -a ${quote(PLATFORM_IDS.join(' '))}`);
      }
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
