import type { HttpServer } from '../../platform/http/server.ts';
import { operatorRequired } from '../identity/index.ts';
import { RecordOfProcessing } from './privacy.records.schemas.ts';
import type { RecordsService } from './privacy.records.ts';

/** The record of processing activities (Art. 30): platform operators only. */
export function registerRecordsRoutes(app: HttpServer, { records }: { records: RecordsService }) {
  app.get(
    '/api/operator/privacy/records',
    {
      schema: {
        tags: ['operator', 'privacy'],
        security: [{ session: [], csrf: [] }],
        summary:
          'The record of processing activities (Art. 30 GDPR): per purpose, the data, the people, the lawful basis, recipients, retention and security measures',
        response: { 200: RecordOfProcessing },
      },
      preHandler: operatorRequired,
    },
    async () => records.record(),
  );
}
