import { KeyError } from '../errors.js';
import type { KeySource } from './key-source.js';

const SCHEMES = ['aws-kms://', 'gcp-kms://', 'vault-transit://'];

/** Opens the KMS named by CREDENTIAL_KMS_URI. */
export async function openKmsKeySource(uri: string, _env: NodeJS.ProcessEnv): Promise<KeySource> {
  const scheme = SCHEMES.find((s) => uri.startsWith(s));
  if (!scheme) {
    throw new KeyError(`CREDENTIAL_KMS_URI "${uri}" names no KMS credvault knows`, {
      hint: `Use one of ${SCHEMES.map((s) => `${s}…`).join(', ')}.`,
    });
  }
  throw new KeyError(`the ${scheme.slice(0, -3)} key source is not part of this credvault version yet`, {
    hint: 'Unset CREDENTIAL_KMS_URI and use a local master key (CREDENTIAL_MASTER_KEY or CREDENTIAL_MASTER_KEY_FILE).',
  });
}
