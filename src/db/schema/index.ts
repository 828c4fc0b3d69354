export * from './api-clients.js';
export * from './apps.js';
export * from './audit.js';
export * from './connections.js';
export * from './data-keys.js';
export * from './oauth-states.js';
export * from './platforms.js';
export * from './tokens.js';
