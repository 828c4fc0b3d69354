/**
 * A key source holds the key-encryption key (KEK) that wraps data keys. The local master key is one;
 * the KMS backends (AWS KMS, GCP KMS, Vault Transit) implement the same interface.
 */

export type KeySourceKind = 'local' | 'aws-kms' | 'gcp-kms' | 'vault-transit';

/** What a wrapped data key is bound to; a KMS uses it as its encryption context / associated data. */
export interface WrapContext {
  dataKeyId: string;
}

export interface KeySource {
  readonly kind: KeySourceKind;
  /** Where the key came from, for messages: "CREDENTIAL_MASTER_KEY", "/var/lib/credvault/master.key", a KMS URI. */
  readonly origin: string;
  /** A short identifier of the KEK, stored beside each wrapped data key; never the key itself. */
  readonly keyId: string;
  wrap(dataKey: Buffer, context: WrapContext): Promise<string>;
  /** Throws KeyError when the wrapped key does not open with this KEK. */
  unwrap(wrapped: string, context: WrapContext): Promise<Buffer>;
  /** A new data key and its wrapped form in one call, where the KMS has one (GenerateDataKey, datakey). */
  generateDataKey?(context: WrapContext): Promise<{ key: Buffer; wrapped: string }>;
  /**
   * Re-wraps under the key's newest version without the data key leaving the KMS (Vault's rewrap):
   * how `key rotate` renews wrapped keys after the KMS key itself was rotated.
   */
  rewrap?(wrapped: string, context: WrapContext): Promise<string>;
  close?(): Promise<void>;
}
