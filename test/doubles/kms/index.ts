/** KMS doubles for credvault's key sources: AWS KMS, Google Cloud KMS and Vault Transit. */
export * from './aws.js';
export * from './gcp.js';
export * from './vault.js';
